package sim

import (
	"encoding/json"
	"math/big"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
)

// Amounts are generated as integers of minor units and computed with decimal; no
// amount ever passes through float64.

// minor returns units × 10^-scale.
func minor(units int64, scale int32) decimal.Decimal {
	return decimal.New(units, -scale)
}

// randAmount draws an amount in whole units between lo and hi (log-uniform over the
// decades, so small and large amounts both occur), with scale minor digits; with
// roundShare probability it is a round number (a multiple of a power of ten).
func randAmount(d *deriver, lo, hi int64, scale int32, roundShare int) decimal.Decimal {
	decades := 0
	for v := lo; v*10 <= hi; v *= 10 {
		decades++
	}
	top := lo
	for range d.intn(decades + 1) {
		top *= 10
	}
	units := d.between(lo, min(max(top*10-1, lo), hi))
	if d.intn(100) < roundShare {
		p := int64(1)
		for p*10 <= units/10 {
			p *= 10
		}
		return decimal.New(units/p*p, 0)
	}
	var frac int64
	if scale > 0 {
		frac = d.between(0, pow10(scale)-1)
	}
	return decimal.New(units, 0).Add(decimal.New(frac, -scale))
}

func pow10(n int32) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// jitter returns base × (1 + k/10000) for a k drawn in [-bp, bp], at scale digits.
func jitter(d *deriver, base string, bp int64, scale int32) decimal.Decimal {
	b := decimal.RequireFromString(base)
	k := d.between(-bp, bp)
	return b.Mul(decimal.New(10000+k, -4)).Round(scale)
}

// fixed prints v with exactly scale fraction digits (Circle and Stripe amounts).
func fixed(v decimal.Decimal, scale int32) string {
	return v.StringFixed(scale)
}

// javaNumber prints v as Java's BigDecimal.toString would with v's coefficient and
// exponent: plain while the adjusted exponent is >= -6 and the scale is not negative,
// scientific otherwise ("1E+4", "0E-18"). Coindirect writes its amounts this way.
func javaNumber(v decimal.Decimal) json.Number {
	return json.Number(javaString(v.Coefficient(), -v.Exponent()))
}

func javaString(coef *big.Int, scale int32) string {
	neg := coef.Sign() < 0
	digits := new(big.Int).Abs(coef).String()
	adjusted := -int64(scale) + int64(len(digits)-1)
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	switch {
	case scale == 0:
		b.WriteString(digits)
	case scale > 0 && adjusted >= -6:
		if int(scale) < len(digits) {
			b.WriteString(digits[:len(digits)-int(scale)])
			b.WriteByte('.')
			b.WriteString(digits[len(digits)-int(scale):])
		} else {
			b.WriteString("0.")
			b.WriteString(strings.Repeat("0", int(scale)-len(digits)))
			b.WriteString(digits)
		}
	default:
		b.WriteByte(digits[0])
		if len(digits) > 1 {
			b.WriteByte('.')
			b.WriteString(digits[1:])
		}
		b.WriteByte('E')
		if adjusted >= 0 {
			b.WriteByte('+')
		}
		b.WriteString(strconv.FormatInt(adjusted, 10))
	}
	return b.String()
}

// stripped is v without trailing zeros (Java's stripTrailingZeros): 10000 becomes
// 1E+4 when printed by javaNumber. Zero is plain 0.
func stripped(v decimal.Decimal) decimal.Decimal {
	c := v.Coefficient()
	if c.Sign() == 0 {
		return decimal.Zero
	}
	exp := v.Exponent()
	ten := big.NewInt(10)
	q, r := new(big.Int), new(big.Int)
	for {
		q.QuoRem(c, ten, r)
		if r.Sign() != 0 {
			break
		}
		c, q = q, c
		exp++
	}
	return decimal.NewFromBigInt(c, exp)
}

// atScale is v with exactly scale fraction digits, zeros included (0.0305817 at 18 is
// 0.030581700000000000).
func atScale(v decimal.Decimal, scale int32) decimal.Decimal {
	r := v.Round(scale)
	c := r.Coefficient()
	if e := r.Exponent(); e > -scale {
		c.Mul(c, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(e+scale)), nil))
	}
	return decimal.NewFromBigInt(c, -scale)
}
