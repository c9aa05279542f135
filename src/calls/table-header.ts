/**
 * The `qlik-tabledescription-bin` header of a table result, refused when Qlik could not read it.
 *
 * The header names every field, so it grows with the columns: 1,000 columns, or 150 with long names,
 * make it larger than a gRPC C-core client (Qlik's engine) accepts. C-core limits the whole header
 * list of a response by `grpc.max_metadata_size`, 8192 bytes by default (newer versions: a soft
 * limit of 8 KiB and a hard one of 16 KiB, with calls between them refused at random), counting each
 * field as name + value as sent + 32 bytes (RFC 7541's entry overhead; the value of a -bin field is
 * its base64 text). Past it the engine fails the call with "received initial metadata size exceeds
 * limit" while this plugin has answered OK. So the table header is checked before it is sent: the
 * call fails with RESOURCE_EXHAUSTED naming the columns and the limit, which Qlik shows the author.
 */
import { Metadata } from '@grpc/grpc-js';
import { PluginError } from '../contract/errors';
import type { DataType } from '../contract/task';
import { encodeMessage, messages } from '../grpc/proto';

export const TABLE_HEADER = 'qlik-tabledescription-bin';

/** C-core's default grpc.max_metadata_size: the bound for all of a response's initial headers. */
export const CCORE_MAX_METADATA_BYTES = 8192;
/**
 * What the response's other initial headers may take: :status, content-type, grpc-encoding,
 * grpc-accept-encoding, date and qlik-cache add up to about 350 bytes as C-core counts them.
 */
const OTHER_HEADERS_BYTES = 512;
/** The most the table header may take as C-core counts it: 7680 bytes. */
export const MAX_TABLE_HEADER_BYTES = CCORE_MAX_METADATA_BYTES - OTHER_HEADERS_BYTES;
/** RFC 7541 section 4.1: each header field counts 32 bytes beyond its name and value. */
const HPACK_ENTRY_OVERHEAD_BYTES = 32;

export interface TableField {
  readonly name: string;
  readonly dataType: DataType;
}

/** The header's size as C-core counts it: name + base64 value + 32. */
export function tableHeaderBytes(description: Uint8Array): number {
  const base64Chars = 4 * Math.ceil(description.byteLength / 3);
  return TABLE_HEADER.length + base64Chars + HPACK_ENTRY_OVERHEAD_BYTES;
}

/** The initial metadata of a table result; throws RESOURCE_EXHAUSTED when Qlik could not read it. */
export function tableHeader(fields: readonly TableField[], rows: number): Metadata {
  const description = encodeMessage(messages.TableDescription, { fields, numberOfRows: rows });
  const headerBytes = tableHeaderBytes(description);
  if (headerBytes > MAX_TABLE_HEADER_BYTES) {
    throw new PluginError(
      'RESOURCE_EXHAUSTED',
      `the table has ${fields.length} columns: their description (${headerBytes} bytes) is larger than ` +
        `a Qlik engine reads (${MAX_TABLE_HEADER_BYTES} bytes of its ${CCORE_MAX_METADATA_BYTES}-byte header limit); ` +
        'return fewer columns or shorter names',
    );
  }
  const metadata = new Metadata();
  metadata.set(TABLE_HEADER, description);
  return metadata;
}
