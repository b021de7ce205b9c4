package pipeline

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestSeriesCSVKeepsBlanks(t *testing.T) {
	s := Series{Columns: []string{"seconds", "rss", "free"}, Rows: [][]float64{{0, 1024, math.NaN()}, {10, 2048.5, 4096}}}
	csv := string(s.CSV())
	if want := "seconds,rss,free\n0,1024,\n10,2048.5,4096\n"; csv != want {
		t.Fatalf("CSV:\n%s\nwant:\n%s", csv, want)
	}
	back, err := ReadSeries(strings.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 2 || !math.IsNaN(back.Rows[0][2]) || back.Rows[1][1] != 2048.5 {
		t.Errorf("read back %+v", back.Rows)
	}
	if _, err := ReadSeries(strings.NewReader("seconds,rss\n0,lots\n")); err == nil || !strings.Contains(err.Error(), `"lots"`) {
		t.Errorf("bad number: err %v", err)
	}
}

func TestSVGBreaksLinesAtGapsAndDashesRuns(t *testing.T) {
	a := Series{Label: "current", Columns: []string{"seconds", "free"}, Rows: [][]float64{{0, 1}, {1, math.NaN()}, {2, 3}, {3, 4}}}
	b := Series{Label: "previous", Columns: a.Columns, Rows: [][]float64{{0, 2}, {4, 2}}}
	svg := SVG([]Panel{{Title: "free", Unit: 1, Cols: []int{1}}}, a, b)
	// a's line is broken by its gap: two polylines; b's is one, dashed.
	if n := bytes.Count(svg, []byte("<polyline")); n != 3 {
		t.Errorf("%d polylines, want 3:\n%s", n, svg)
	}
	if !bytes.Contains(svg, []byte(`stroke-dasharray="6,4" points=`)) || !bytes.Contains(svg, []byte(">previous:<")) {
		t.Errorf("the second run is not dashed or not in the legend:\n%s", svg)
	}
}

func TestProcRSS(t *testing.T) {
	anon, _, err := ProcRSS(0)
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if anon == 0 {
		t.Error("this process has no anonymous resident memory")
	}
	if _, _, err := ProcRSS(math.MaxInt32); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
