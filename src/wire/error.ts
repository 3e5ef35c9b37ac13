/**
 * WireError: what a view's `check()` and a Repr's `parse()` return (never throw) for bytes that
 * are not a well-formed packet of their protocol. Bad input is normal on a network: the caller
 * counts a drop by `code` (the meter's drop reasons use it as is) and moves on.
 *
 * The errors are created once per module and shared (see `wireError`): a flood of malformed
 * frames must not cost an Error allocation and a stack capture each. Treat them as constants.
 *
 * Only programming errors throw (an emit into a buffer too small for the header, an offset
 * outside the buffer passed to a checksum routine).
 */

export type WireErrorCode =
  /** The buffer (or the length a header claims) ends before the field that was needed. */
  | 'truncated'
  /** An IP version nibble other than the view's. */
  | 'bad-version'
  /** A header length field below the minimum or beyond the datagram. */
  | 'bad-header-length'
  /** A total/payload length field that contradicts itself or the buffer. */
  | 'bad-length'
  /** A malformed option (TLV overruns, wrong fixed length, zero length). */
  | 'bad-option'
  /** A type/opcode the Repr does not model. */
  | 'unsupported'
  /** A textual address that does not parse (address helpers only; those throw). */
  | 'bad-address';

export class WireError extends Error {
  override readonly name = 'WireError';

  constructor(
    readonly code: WireErrorCode,
    /** The protocol that found the problem: 'ipv4', 'tcp', 'dhcp', ... */
    readonly layer: string,
    message: string,
  ) {
    super(`${layer}: ${message}`);
  }
}

/** A shared, frozen WireError constant (one per module and reason). */
export function wireError(code: WireErrorCode, layer: string, message: string): WireError {
  return Object.freeze(new WireError(code, layer, message));
}
