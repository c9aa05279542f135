// Aggregations for Qlik: computed once over all the rows of a call (a chart cell, a GROUP BY group).

// The finite numbers of a column, sorted; Qlik nulls arrive as NaN and are left out.
function sortedNumbers(values) {
  return values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
}

// Linear interpolation between closest ranks (what Excel's PERCENTILE.INC and Qlik's Fractile do).
function percentile(sorted, p) {
  if (sorted.length === 0 || !(p >= 0 && p <= 1)) return null;
  const rank = p * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

exports.Median = {
  kind: 'aggregation',
  params: { values: 'number' },
  returns: 'number',
  run(values) {
    return percentile(sortedNumbers(values), 0.5);
  },
};

// Percentile(Sales, 0.9): p is the same on every row; the first p that is a number is used.
exports.Percentile = {
  kind: 'aggregation',
  params: { values: 'number', p: 'number' },
  returns: 'number',
  run(values, p) {
    return percentile(
      sortedNumbers(values),
      p.find((x) => Number.isFinite(x)),
    );
  },
};
