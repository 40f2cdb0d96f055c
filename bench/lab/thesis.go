package benchlab

// The thesis's measured figures (F. E. Watson, "Enhance TCP Performance with Multiple
// Path Routing", M.S. thesis, University of Colorado at Colorado Springs, 2005,
// chapter 4), in kB/s (1 kB = 1000 bytes, so a 20 kB/s
// limit is 160 kbit/s). Columns are per-path rate limits in kB/s.

// thesisRates are the thesis's rate columns, kB/s per path.
var thesisRates = []int{20, 50, 100, 150, 200, 250, 500}

// thesisRatios are the weight ratios 1:k of tables 4.12 and 4.20 (4.14 and 4.22 start
// at 1:5).
var thesisRatios = []int{1, 5, 10, 15, 20, 25, 50}

// thesisBuffers are the reorder buffer sizes (packets) of table 4.24.
var thesisBuffers = []int{1, 5, 10, 15, 20, 25, 50}

// thesisRow is one row of a thesis table: a value per entry of thesisRates.
type thesisRow [7]float64

var (
	// Table 4.4: direct connection (no tunnel, no relay) with a rate limit.
	thesis44 = thesisRow{19.16, 47.89, 95.68, 143.57, 191.1, 238.93, 475.91}
	// Table 4.6: IP tunnel (one relay) with a rate limit.
	thesis46 = thesisRow{19.18, 47.91, 95.84, 148.8, 191.5, 239.81, 477.58}
	// Table 4.8: multipath, no buffer, every path limited; by number of nodes 1..5.
	thesis48 = [5]thesisRow{
		{18.59, 18.94, 65.78, 100.45, 124.91, 98.13, 156.43},
		{34.52, 75.72, 160.09, 215.88, 284.61, 342.22, 823.66},
		{52.62, 132.81, 239.66, 339.72, 553.93, 507.35, 1145.6},
		{71.8, 169.92, 372.87, 557.24, 539.76, 932.85, 1861.99},
		{90.27, 235.85, 378.31, 700.82, 943.65, 1181.53, 2355.65},
	}
	// Table 4.10: as 4.8 with the connection-based buffer.
	thesis410 = [5]thesisRow{
		{18.59, 19.29, 65.75, 105.93, 124.91, 110.03, 124.86},
		{34.25, 76.65, 114.26, 122.87, 150.46, 276.04, 344.46},
		{53.6, 129.88, 209.03, 365.87, 371.56, 548.52, 976.49},
		{70.97, 167.49, 305.79, 427.14, 733.86, 917.5, 1831.78},
		{89.35, 233.55, 466.35, 513.21, 929.92, 1162.14, 2325.29},
	}
	// Table 4.12: two nodes, no buffer, path 1 limited (column), path 2 the 100 Mbit
	// LAN; by weight ratio 1:1, 1:5, ... 1:50.
	thesis412 = map[int]thesisRow{
		1:  {74.73, 194.04, 379.29, 605.41, 731.56, 912.91, 615.69},
		5:  {744.43, 993.16, 1698.55, 1064.84, 2827.98, 3579.81, 1360.96},
		10: {821.44, 970.64, 2980.17, 3741.78, 1341, 4823.39, 7429.3},
		15: {1099.2, 2766.55, 4537.04, 4715.12, 5726.8, 5537.9, 9547.39},
		20: {2545.89, 2965.74, 4677.69, 5783.55, 6657.01, 7490.8, 10312.84},
		25: {1351.84, 5215.93, 1434.78, 6791.28, 7720.03, 8171.29, 10010.05},
		50: {6735.84, 1526.95, 8058.24, 9238.52, 10543.52, 9898.79, 10386.47},
	}
	// Table 4.14: five nodes, no buffer, path 1 limited, paths 2-5 the LAN.
	thesis414 = map[int]thesisRow{
		5:  {429.16, 473.08, 861.53, 969.8, 1077.58, 2471.8, 4623.66},
		10: {664.92, 1340.77, 2116.51, 2841.25, 3610.58, 4262.41, 7502.99},
		15: {2011.95, 2894.95, 4061.25, 4362.48, 5467.36, 6282.97, 8777.42},
		20: {1683.33, 2994.02, 4374.42, 5525.86, 6901.93, 6622.7, 11038.23},
		25: {4862.64, 5565.77, 6260.65, 6800, 7514.78, 8481.29, 11058.5},
		50: {7395.51, 8078.38, 8846.95, 9471.17, 10889.49, 11070.3, 11089.29},
	}
	// Table 4.20: two nodes, no buffer, path 1 limited (column), path 2 at 100 kB/s.
	thesis420 = map[int]thesisRow{
		1:  {74.02, 95.36, 120.71, 115.16, 115.25, 113.83, 120.84},
		5:  {61.37, 87.88, 108.97, 121.59, 103.87, 110.27, 102.76},
		10: {61.3, 102.12, 121.61, 101.3, 103.08, 109.29, 121.61},
		15: {59.55, 101.79, 100.13, 112.86, 102.06, 121.61, 121.61},
		20: {61.37, 102.06, 101.84, 110.95, 121.61, 121.61, 119.55},
		25: {61.43, 100.29, 105.81, 109.06, 121.51, 120.48, 105.3},
		50: {54.81, 111.21, 114.28, 121.51, 104.42, 105.15, 107.26},
	}
	// Table 4.22: five nodes, with buffer, path 1 limited, paths 2-5 at 100 kB/s.
	thesis422 = map[int]thesisRow{
		5:  {192.4, 344.35, 471.66, 378.65, 379.09, 471.37, 379.47},
		10: {121.29, 322.16, 466.71, 466.98, 467.59, 467.85, 467.74},
		15: {127.86, 326.75, 467.07, 467.33, 465.71, 467.85, 467.36},
		20: {127.8, 319.98, 467.02, 467.7, 467.22, 466.74, 467.01},
		25: {127.8, 319.79, 315.31, 467.62, 377.06, 466.33, 467.37},
		50: {127.82, 319.6, 465.88, 466.93, 375.83, 467.78, 466.94},
	}
	// Table 4.24: one node, buffer size (packets) swept.
	thesis424 = map[int]thesisRow{
		1:  {18.93, 48.25, 66.4, 96.97, 124.91, 98.32, 139.51},
		5:  {19.12, 48.23, 65.78, 100.39, 124.91, 98.4, 153.59},
		10: {19.12, 48.25, 65.78, 100.38, 123.93, 100.68, 223.16},
		15: {19.12, 48.25, 66.11, 100.39, 114.58, 105.44, 199.05},
		20: {19.1, 48.25, 65.76, 102.05, 125.43, 98.46, 164.55},
		25: {18.94, 48.25, 65.78, 96.03, 124.77, 98.39, 144.63},
		50: {18.93, 47.1, 65.65, 100.32, 124.91, 98.39, 144.08},
	}
)

// thesisAt returns row's value for a rate column (kB/s) and whether the thesis has it.
func thesisAt(row thesisRow, rateKB int) (float64, bool) {
	for i, r := range thesisRates {
		if r == rateKB {
			return row[i], true
		}
	}
	return 0, false
}
