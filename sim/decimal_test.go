package sim

import (
	"encoding/json"
	"testing"

	"github.com/shopspring/decimal"
)

func TestJavaNumberMatchesBigDecimalToString(t *testing.T) {
	d := decimal.RequireFromString
	for _, c := range []struct {
		v    decimal.Decimal
		want string
	}{
		{stripped(d("10000")), "1E+4"},
		{stripped(d("12000")), "1.2E+4"},
		{stripped(d("77.110")), "77.11"},
		{stripped(d("0.0305817000")), "0.0305817"},
		{atScale(d("0.0305817"), 18), "0.030581700000000000"},
		{atScale(d("326992.94022242059793929"), 18), "326992.940222420597939290"},
		{atScale(decimal.Zero, 18), "0E-18"},
		{stripped(decimal.Zero), "0"},
		{atScale(d("0.0000005"), 18), "5.00000000000E-7"},
		{stripped(d("0.0000005")), "5E-7"},
		{stripped(d("-2500")), "-2.5E+3"},
		{d("123"), "123"},
	} {
		got := javaNumber(c.v)
		if string(got) != c.want {
			t.Errorf("javaNumber(%s) = %s, want %s", c.v, got, c.want)
		}
		// Every form must be a JSON number that decodes back to the same value.
		var n json.Number
		if err := json.Unmarshal([]byte(got), &n); err != nil {
			t.Errorf("%s is not a JSON number: %v", got, err)
		}
		back, err := decimal.NewFromString(string(got))
		if err != nil || !back.Equal(c.v) {
			t.Errorf("%s parses back as %s, %v; want %s", got, back, err, c.v)
		}
	}
}

func TestRandAmountStaysInRangeWithScale(t *testing.T) {
	d := deriver{x: 42}
	round := 0
	for range 2000 {
		v := randAmount(&d, 10, 50000, 2, 30)
		if v.LessThan(decimal.NewFromInt(10)) || v.GreaterThanOrEqual(decimal.NewFromInt(50001)) {
			t.Fatalf("amount %s outside 10..50000", v)
		}
		if v.Exponent() < -2 {
			t.Fatalf("amount %s has more than 2 decimals", v)
		}
		if v.Equal(v.Truncate(0)) {
			round++
		}
	}
	if round < 400 || round > 1000 {
		t.Errorf("%d of 2000 amounts are whole, want about 30%%", round)
	}
}
