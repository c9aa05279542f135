// Text helpers for Qlik: slugs, padding, regular expressions, edit distance.
// Each exports.Name = { … } is a plugin function (see docs/operations.md, "Plugin functions").
// The helpers at the top are shared by the functions of this file; they run inside the sandbox.

// Compiled patterns of this call: a column of rows usually repeats one pattern.
const patterns = new Map();
function pattern(source, flags) {
  const key = `${flags}/${source}`;
  let re = patterns.get(key);
  if (re === undefined) {
    re = new RegExp(source, flags);
    patterns.set(key, re);
  }
  return re;
}

function levenshtein(a, b) {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost);
    }
    previous = current;
  }
  return previous[b.length];
}

// 'Crème Brûlée, 2 pers.' -> 'creme-brulee-2-pers'
exports.Slugify = {
  kind: 'row',
  params: { text: 'text' },
  returns: 'text',
  run(text) {
    return text
      .normalize('NFKD')
      .replace(/[\u0300-\u036f]/g, '')
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '');
  },
};

// PadLeft('42', 5, '0') -> '00042'; an empty fill pads with spaces.
exports.PadLeft = {
  kind: 'row',
  params: { text: 'text', width: 'number', fill: 'text' },
  returns: 'text',
  run(text, width, fill) {
    return text.padStart(Number.isFinite(width) ? width : 0, fill === '' ? ' ' : fill);
  },
};

exports.PadRight = {
  kind: 'row',
  params: { text: 'text', width: 'number', fill: 'text' },
  returns: 'text',
  run(text, width, fill) {
    return text.padEnd(Number.isFinite(width) ? width : 0, fill === '' ? ' ' : fill);
  },
};

// 1 when the text matches the pattern (JavaScript syntax, case-insensitive), else 0.
exports.RegexMatch = {
  kind: 'row',
  params: { text: 'text', pattern: 'text' },
  returns: 'number',
  run(text, source) {
    return pattern(source, 'iu').test(text);
  },
};

// The given capture group (0: the whole match) of the first match, or '' when there is none.
exports.RegexExtract = {
  kind: 'row',
  params: { text: 'text', pattern: 'text', group: 'number' },
  returns: 'text',
  run(text, source, group) {
    const match = pattern(source, 'u').exec(text);
    return match === null ? '' : (match[Number.isFinite(group) ? group : 0] ?? '');
  },
};

// Number of single-character edits between two texts.
exports.Levenshtein = {
  kind: 'row',
  params: { a: 'text', b: 'text' },
  returns: 'number',
  run(a, b) {
    return levenshtein(a, b);
  },
};

// Similarity from 0 (nothing alike) to 1 (equal), ignoring case and surrounding spaces.
exports.FuzzyMatch = {
  kind: 'row',
  params: { a: 'text', b: 'text' },
  returns: 'number',
  run(a, b) {
    const x = a.trim().toLowerCase();
    const y = b.trim().toLowerCase();
    const longest = Math.max(x.length, y.length);
    return longest === 0 ? 1 : 1 - levenshtein(x, y) / longest;
  },
};
