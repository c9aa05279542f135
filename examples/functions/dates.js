// Date parsing for Qlik: text in a known format to a Qlik serial date (days since 1899-12-30).

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
// Longest tokens first, so that YYYY is not read as YY + YY.
const TOKENS = [
  ['YYYY', '(\\d{4})', 'year'],
  ['YY', '(\\d{2})', 'year2'],
  ['MMM', '([A-Za-z]{3})[A-Za-z]*', 'monthName'],
  ['MM', '(\\d{2})', 'month'],
  ['M', '(\\d{1,2})', 'month'],
  ['DD', '(\\d{2})', 'day'],
  ['D', '(\\d{1,2})', 'day'],
  ['hh', '(\\d{2})', 'hour'],
  ['h', '(\\d{1,2})', 'hour'],
  ['mm', '(\\d{2})', 'minute'],
  ['ss', '(\\d{2})', 'second'],
];
const formats = new Map();

// 'DD.MM.YYYY hh:mm' -> a RegExp and the field each group fills.
function compileFormat(format) {
  let source = '^\\s*';
  const fields = [];
  for (let i = 0; i < format.length; ) {
    const token = TOKENS.find(([t]) => format.startsWith(t, i));
    if (token) {
      source += token[1];
      fields.push(token[2]);
      i += token[0].length;
    } else {
      source += format[i].replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      i += 1;
    }
  }
  return { re: new RegExp(`${source}\\s*$`), fields };
}

function serialDate(text, format) {
  let compiled = formats.get(format);
  if (compiled === undefined) {
    compiled = compileFormat(format);
    formats.set(format, compiled);
  }
  const match = compiled.re.exec(text);
  if (match === null) return null;
  const v = { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0 };
  compiled.fields.forEach((field, i) => {
    const part = match[i + 1];
    if (field === 'monthName') v.month = MONTHS.indexOf(part.toLowerCase()) + 1;
    else if (field === 'year2') v.year = 2000 + Number(part) - (Number(part) >= 70 ? 100 : 0);
    else v[field] = Number(part);
  });
  const ms = Date.UTC(v.year, v.month - 1, v.day, v.hour, v.minute, v.second);
  const check = new Date(ms);
  // 31.02.2024 is not a date: refuse it rather than roll over into March.
  if (v.month < 1 || check.getUTCMonth() !== v.month - 1 || check.getUTCDate() !== v.day || v.hour > 23 || v.minute > 59 || v.second > 59)
    return null;
  return ms / 86400000 + 25569;
}

// ParseDate('24.12.2023', 'DD.MM.YYYY') -> 45284; null when the text does not fit the format.
// Tokens: YYYY YY MM M MMM (Jan…Dec) DD D hh h mm ss; anything else must appear as written.
exports.ParseDate = {
  kind: 'row',
  params: { text: 'text', format: 'text' },
  returns: 'number',
  run(text, format) {
    return serialDate(text, format);
  },
};
