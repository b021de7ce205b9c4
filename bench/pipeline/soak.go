package pipeline

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Series is a table of samples taken over time, as the soak benchmark
// (bench/footprint) records them: Columns name the values of each row, the first
// being the seconds since the start. NaN marks a value that was not measured (a
// metric the process does not export); it is blank in the CSV and a gap in the chart.
type Series struct {
	// Label names the series in a chart that shows several.
	Label   string
	Columns []string
	Rows    [][]float64
}

// Panel is one chart of an SVG picture: a title, the divisor that turns values into
// the title's unit, and the columns (indexes into Series.Columns) drawn in it.
type Panel struct {
	Title string
	Unit  float64
	Cols  []int
}

// CSV renders the series with a header line; NaN values are empty fields.
func (s Series) CSV() []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write(s.Columns)
	for _, row := range s.Rows {
		rec := make([]string, len(row))
		for i, v := range row {
			if !math.IsNaN(v) {
				rec[i] = strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
		_ = w.Write(rec)
	}
	w.Flush()
	return b.Bytes()
}

// ReadSeries parses what Series.CSV wrote: a header line, then rows of numbers or
// empty fields (NaN). Label is left for the caller to set.
func ReadSeries(r io.Reader) (Series, error) {
	recs, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return Series{}, err
	}
	if len(recs) == 0 {
		return Series{}, fmt.Errorf("no header line")
	}
	s := Series{Columns: recs[0]}
	for n, rec := range recs[1:] {
		row := make([]float64, len(rec))
		for i, f := range rec {
			if f == "" {
				row[i] = math.NaN()
				continue
			}
			if row[i], err = strconv.ParseFloat(f, 64); err != nil {
				return Series{}, fmt.Errorf("line %d, column %s: %q is not a number", n+2, s.Columns[i], f)
			}
		}
		s.Rows = append(s.Rows, row)
	}
	return s, nil
}

var chartColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

// chartDashes tell the runs of a picture apart: the first solid, the next dashed.
var chartDashes = []string{"", "6,4", "2,3"}

// SVG draws panels, one under the other, each with the columns it names for every
// run: a column's colour is its place in the panel, a run's dash pattern its place
// among runs. Each panel is scaled from 0 to its largest value over all runs and the
// time axis to the longest run. Column names and run labels make the legend.
func SVG(panels []Panel, runs ...Series) []byte {
	const w, h, left = 900, 140, 60
	// Above each panel: its title, then a legend line per run.
	top := 30 + 16*len(runs)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n",
		w+left+20, len(panels)*(h+top)+20)
	end := 1.0
	for _, r := range runs {
		if n := len(r.Rows); n > 0 {
			end = max(end, r.Rows[n-1][0])
		}
	}
	for i, p := range panels {
		y0 := i*(h+top) + top
		peak := 0.0
		for _, r := range runs {
			for _, row := range r.Rows {
				for _, c := range p.Cols {
					if c < len(row) && !math.IsNaN(row[c]) {
						peak = max(peak, row[c]/p.Unit)
					}
				}
			}
		}
		peak = max(peak, 1)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s (peak %.1f; %s)</text>`+"\n", left, y0-10-16*len(runs), p.Title, peak, time.Duration(end)*time.Second)
		for ri, r := range runs {
			y := y0 - 6 - 16*(len(runs)-1-ri)
			x := left
			if r.Label != "" {
				fmt.Fprintf(&b, `<text x="%d" y="%d">%s:</text>`+"\n", x, y, r.Label)
				x += 14 + 7*len(r.Label)
			}
			for j, c := range p.Cols {
				name := ""
				if c < len(r.Columns) {
					name = r.Columns[c]
				}
				fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n",
					x, y-4, x+20, y-4, chartColors[j%len(chartColors)], chartDashes[ri%len(chartDashes)])
				fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x+24, y, name)
				x += 34 + 7*len(name)
			}
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, y0, w, h)
		for ri, r := range runs {
			for j, c := range p.Cols {
				// A NaN ends a line; the next value starts another.
				var pts []string
				flush := func() {
					if len(pts) > 0 {
						fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="%s" points="%s"/>`+"\n",
							chartColors[j%len(chartColors)], chartDashes[ri%len(chartDashes)], strings.Join(pts, " "))
					}
					pts = pts[:0]
				}
				for _, row := range r.Rows {
					if c >= len(row) || math.IsNaN(row[c]) {
						flush()
						continue
					}
					px := float64(left) + row[0]/end*w
					py := float64(y0+h) - row[c]/p.Unit/peak*h
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
				}
				flush()
			}
		}
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// ThisMachine describes the machine the benchmark runs on.
func ThisMachine() Machine { return machine() }

// ProcRSS returns RssAnon and RssFile of process pid (0: this process) from
// /proc/PID/status, in bytes.
func ProcRSS(pid int) (anon, file uint64, err error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "RssAnon" && k != "RssFile") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("%s: %s %q is not a size in kB", path, k, strings.TrimSpace(v))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %s %q is not a size in kB", path, k, strings.TrimSpace(v))
		}
		if k == "RssAnon" {
			anon = n * 1024
		} else {
			file = n * 1024
		}
		seen++
	}
	if seen != 2 {
		return 0, 0, fmt.Errorf("%s has no RssAnon and RssFile lines", path)
	}
	return anon, file, nil
}
