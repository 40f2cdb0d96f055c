package benchlab

// Charts in the thesis's shapes, drawn with gonum/plot, each as PNG (embedded in
// report.md) and SVG beside it (same name, .svg: scalable, for papers and slides):
//
//	"lines" tables (4.8, 4.12, ...): one panel per system (the thesis first, then mpath,
//	  MPTCP, ...), side by side on the same y axis; x = the table's variable (nodes,
//	  weight ratio, buffer size), one line per rate column. Two charts: kB/s (log scale)
//	  and the fraction of the sum of the path rates.
//	"bars" tables (RTT, loss, proxy, ...): one group of bars per cell, one bar per system,
//	  the sum of the path rates as the last bar.
//
// Every chart keeps its legend in a margin right of the data (inside a panel it hides
// lines and bars) and labels 5-10 ticks on the y axis.

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// chartBase is the file name stem for a table's charts: "table-4.8", "table-4.4-4.6".
func chartBase(t *Table) string {
	r := strings.NewReplacer("/", "-", " ", "-", ".", ".")
	return "table-" + r.Replace(t.ID)
}

// writeCharts draws t's charts into dir and returns the PNG file names (each has an SVG
// twin: the same name ending in .svg).
func writeCharts(dir string, t *Table) ([]string, error) {
	switch t.Chart {
	case "lines":
		a, err := linesChart(dir, t, false)
		if err != nil {
			return nil, err
		}
		b, err := linesChart(dir, t, true)
		if err != nil {
			return nil, err
		}
		return []string{a, b}, nil
	case "bars":
		a, err := barsChart(dir, t)
		if err != nil {
			return nil, err
		}
		return []string{a}, nil
	}
	return nil, nil
}

// panel is one system's panel: a line per series.
type panel struct {
	title string
	lines map[string]plotter.XYs
}

// value is what a chart plots for a run: kB/s, or the fraction of the cell's sum.
func value(c *Cell, kbps float64, fraction bool) (float64, bool) {
	if kbps <= 0 {
		return 0, false
	}
	if fraction {
		if c.Sum <= 0 {
			return 0, false
		}
		return kbps * 1000 / float64(c.Sum), true
	}
	return kbps, true
}

func linesChart(dir string, t *Table, fraction bool) (string, error) {
	var panels []panel
	for _, id := range t.Thesis {
		p := panel{title: "thesis " + id, lines: map[string]plotter.XYs{}}
		for _, c := range t.Cells {
			if v, ok := value(c, c.Thesis[id], fraction); ok {
				p.lines[c.Series] = append(p.lines[c.Series], plotter.XY{X: c.X, Y: v})
			}
		}
		if len(p.lines) > 0 {
			panels = append(panels, p)
		}
		break // the first thesis table only: the others are in the text tables
	}
	for _, sys := range t.Systems {
		p := panel{title: sys, lines: map[string]plotter.XYs{}}
		for _, c := range t.Cells {
			if run := c.Runs[sys]; run != nil && run.Err == "" {
				if v, ok := value(c, run.KBps, fraction); ok {
					p.lines[c.Series] = append(p.lines[c.Series], plotter.XY{X: c.X, Y: v})
				}
			}
		}
		panels = append(panels, p)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range panels {
		for _, xys := range p.lines {
			for _, xy := range xys {
				lo, hi = math.Min(lo, xy.Y), math.Max(hi, xy.Y)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	series := t.series()
	legend := plot.NewLegend()
	legend.Top = true
	legend.Left = true
	plots := make([]*plot.Plot, len(panels))
	for j, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.title
		p.X.Label.Text = t.XLabel
		p.X.Tick.Marker = xTicks(t)
		if fraction {
			p.Y.Label.Text = "fraction of the sum of the path rates"
			p.Y.Min, p.Y.Max = 0, math.Max(1.1, hi*1.05)
			p.Y.Tick.Marker = linearTicks{}
		} else {
			p.Y.Label.Text = "kB/s"
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = logTicks{}
			p.Y.Min, p.Y.Max = lo/1.3, hi*1.3
		}
		p.Add(plotter.NewGrid())
		for si, s := range series {
			xys := pn.lines[s]
			if len(xys) == 0 {
				continue
			}
			l, pts, err := plotter.NewLinePoints(xys)
			if err != nil {
				return "", fmt.Errorf("chart %s: %w", t.ID, err)
			}
			l.Color = plotutil.Color(si)
			l.Width = vg.Points(1.5)
			pts.Color = plotutil.Color(si)
			pts.Shape = plotutil.Shape(si)
			p.Add(l, pts)
			if j == len(panels)-1 {
				legend.Add(s, l, pts)
			}
		}
		plots[j] = p
	}
	base := chartBase(t)
	title := fmt.Sprintf("Table %s: %s, kB/s", t.ID, t.Title)
	if fraction {
		base = chartBase(t) + "-fraction"
		title = fmt.Sprintf("Table %s: %s, fraction of the sum of the path rates", t.ID, t.Title)
	}
	return base + ".png", saveFigure(dir, base, title, plots, legend, series, 4.2*vg.Inch)
}

// saveFigure draws plots side by side, each panelW wide, under a title, with the legend
// (entries labelled by labels) in a margin on the right, and writes dir/base.png and
// dir/base.svg.
func saveFigure(dir, base, title string, plots []*plot.Plot, legend plot.Legend, labels []string, panelW vg.Length) error {
	longest := 0
	for _, l := range labels {
		longest = max(longest, len(l))
	}
	legendW := max(1.4*vg.Inch, vg.Length(longest)*0.085*vg.Inch+0.55*vg.Inch)
	w := vg.Length(len(plots))*panelW + legendW
	h := 4.6 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96), vgimg.UseBackgroundColor(color.White))
	drawFigure(draw.New(img), title, plots, legend, legendW)
	if err := writeFile(filepath.Join(dir, base+".png"), vgimg.PngCanvas{Canvas: img}); err != nil {
		return err
	}
	svg := vgsvg.NewWith(vgsvg.UseWH(w, h))
	drawFigure(draw.New(svg), title, plots, legend, legendW)
	return writeFile(filepath.Join(dir, base+".svg"), svg)
}

// drawFigure lays out a figure on dc: white background, title strip, panels, legend.
func drawFigure(dc draw.Canvas, title string, plots []*plot.Plot, legend plot.Legend, legendW vg.Length) {
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	ttl := plot.New()
	ttl.Title.Text = title
	ttl.HideAxes()
	titleH := 0.35 * vg.Inch * vg.Length(strings.Count(title, "\n")+1)
	top := dc
	top.Min.Y = top.Max.Y - titleH
	ttl.Draw(top)
	body := dc
	body.Max.Y -= titleH
	body.Max.X -= legendW
	lc := dc
	lc.Min.X = body.Max.X + 0.1*vg.Inch
	lc.Max.Y -= titleH + 0.25*vg.Inch
	legend.Draw(lc)
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: 0.3 * vg.Inch, PadY: vg.Millimeter,
		PadTop: vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{plots}, tiles, body)
	for j, p := range plots {
		p.Draw(canvases[0][j])
	}
}

// writeFile writes what wt renders to path.
func writeFile(path string, wt io.WriterTo) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := wt.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func barsChart(dir string, t *Table) (string, error) {
	type bar struct {
		label string
		vals  plotter.Values
	}
	var bars []bar
	var groups []string
	for _, c := range t.Cells {
		g := c.Row
		if len(t.Cols) > 1 {
			g = c.Col
		}
		groups = append(groups, g)
	}
	for _, sys := range t.Systems {
		b := bar{label: sys}
		for _, c := range t.Cells {
			v := 0.0
			if run := c.Runs[sys]; run != nil && run.Err == "" {
				v = run.KBps
			}
			b.vals = append(b.vals, v)
		}
		bars = append(bars, b)
	}
	for _, id := range t.Thesis {
		b := bar{label: "thesis " + id}
		for _, c := range t.Cells {
			b.vals = append(b.vals, c.Thesis[id])
		}
		bars = append(bars, b)
	}
	sum := bar{label: "sum of the path rates"}
	hasSum := false
	for _, c := range t.Cells {
		sum.vals = append(sum.vals, float64(c.Sum)/1000)
		hasSum = hasSum || c.Sum > 0
	}
	if hasSum {
		bars = append(bars, sum)
	}
	p := plot.New()
	p.Y.Label.Text = "kB/s"
	p.Y.Tick.Marker = linearTicks{}
	p.Add(plotter.NewGrid())
	legend := plot.NewLegend()
	legend.Top = true
	legend.Left = true
	var labels []string
	width := vg.Points(math.Max(8, math.Min(28, 300/float64(len(bars)*len(groups)))))
	for i, b := range bars {
		bc, err := plotter.NewBarChart(b.vals, width)
		if err != nil {
			return "", fmt.Errorf("chart %s: %w", t.ID, err)
		}
		bc.Color = plotutil.Color(i)
		bc.LineStyle.Width = 0
		bc.Offset = vg.Length(float64(i)-float64(len(bars)-1)/2) * width
		p.Add(bc)
		legend.Add(b.label, bc)
		labels = append(labels, b.label)
	}
	top := 0.0
	for _, b := range bars {
		for _, v := range b.vals {
			top = math.Max(top, v)
		}
	}
	p.Y.Min, p.Y.Max = 0, top*1.08
	p.NominalX(groups...)
	w := vg.Length(math.Max(6.5, 1.8*float64(len(groups))+1.5)) * vg.Inch
	title := wrap(fmt.Sprintf("%s: %s", t.ID, t.Title), int(w/vg.Inch*14))
	return chartBase(t) + ".png", saveFigure(dir, chartBase(t), title, []*plot.Plot{p}, legend, labels, w)
}

// wrap breaks s into lines of at most n characters at spaces.
func wrap(s string, n int) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > n {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}

// xTicks puts a labelled tick at every x value the table's cells use.
func xTicks(t *Table) plot.Ticker {
	var ticks plot.ConstantTicks
	seen := map[float64]bool{}
	for _, c := range t.Cells {
		if !seen[c.X] {
			seen[c.X] = true
			ticks = append(ticks, plot.Tick{Value: c.X, Label: strconv.FormatFloat(c.X, 'g', -1, 64)})
		}
	}
	return ticks
}

// linearTicks labels 5 to 10 round values (steps of 1, 2, 2.5 or 5 times a power of
// ten) with an unlabelled tick halfway between (plot.DefaultTicks often labels two or
// three).
type linearTicks struct{}

func (linearTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 4, 64)}}
	}
	mag := math.Pow(10, math.Floor(math.Log10((hi-lo)/5)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if (hi-lo)/(m*mag) <= 10 {
			step = m * mag
			break
		}
	}
	var out []plot.Tick
	for i := math.Ceil(lo/step*2) / 2; i*step <= hi+step*1e-9; i += 0.5 {
		v := i * step
		label := ""
		if i == math.Trunc(i) {
			label = strconv.FormatFloat(math.Round(v/mag*100)/100*mag, 'g', 6, 64)
		}
		out = append(out, plot.Tick{Value: v, Label: label})
	}
	return out
}

// logTicks labels 1, 2 and 5 times each power of ten (plot.LogTicks labels only the
// powers, often a single one over the range of a table).
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	for e := math.Floor(math.Log10(lo)) - 1; e <= math.Ceil(math.Log10(hi)); e++ {
		p := math.Pow(10, e)
		for m := 1; m <= 9; m++ {
			v := float64(m) * p
			if v < lo || v > hi {
				continue
			}
			label := ""
			if m == 1 || m == 2 || m == 5 {
				label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			out = append(out, plot.Tick{Value: v, Label: label})
		}
	}
	return out
}
