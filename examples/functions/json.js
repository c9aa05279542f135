// JSON field extraction for Qlik: one value out of a text column holding JSON documents.

// 'customer.address.city', 'items[0].sku', 'tags.1' -> ['customer', 'address', 'city'] …
function pathParts(path) {
  return path.split(/\.|\[(\d+)\]/).filter((part) => part !== undefined && part !== '');
}

function field(json, path) {
  let value;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  for (const part of pathParts(path)) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, part)) return undefined;
    value = value[part];
  }
  return value;
}

// JsonField('{"a":{"b":[1,"x"]}}', 'a.b[1]') -> 'x'; objects and arrays come back as JSON text;
// '' when the text is not JSON or the path is missing.
exports.JsonField = {
  kind: 'row',
  params: { json: 'text', path: 'text' },
  returns: 'text',
  run(json, path) {
    const value = field(json, path);
    return value !== null && typeof value === 'object' ? JSON.stringify(value) : value;
  },
};

// The same field as a number (null when it is missing or not a number).
exports.JsonNumber = {
  kind: 'row',
  params: { json: 'text', path: 'text' },
  returns: 'number',
  run(json, path) {
    const value = field(json, path);
    return typeof value === 'number' || typeof value === 'string' ? value : null;
  },
};
