/**
 * A minimal reader for capture files, for tests: classic pcap (either byte order, micro- or
 * nanosecond timestamps) and pcapng (Section Header, Interface Description, Enhanced and Simple
 * Packet Blocks; other blocks are skipped). Formats: the libpcap file format
 * (draft-ietf-opsawg-pcap) and pcapng (draft-ietf-opsawg-pcapng).
 *
 * `readCapture(path)` returns every record with its link type, its bytes (a view into the file
 * buffer) and `originalLength` (larger than `data.length` when the snapshot length cut it).
 */
import { readFileSync } from 'node:fs';

export interface CaptureRecord {
  /** Index in the file, from 0. */
  index: number;
  /** LINKTYPE_* (1 = Ethernet). */
  linkType: number;
  /** Seconds since the epoch (fractional). */
  timestamp: number;
  data: Uint8Array;
  /** Length on the wire; > data.length when truncated by the snapshot length. */
  originalLength: number;
}

export const LINKTYPE_ETHERNET = 1;

export function readCapture(path: string): CaptureRecord[] {
  return parseCapture(new Uint8Array(readFileSync(path)));
}

export function parseCapture(file: Uint8Array): CaptureRecord[] {
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (file.length < 4) throw new Error('capture: file too short');
  const magic = dv.getUint32(0, false);
  if (magic === 0x0a0d0d0a) return parsePcapng(file, dv);
  return parsePcap(file, dv, magic);
}

function parsePcap(file: Uint8Array, dv: DataView, magicBE: number): CaptureRecord[] {
  let le: boolean;
  let nano: boolean;
  switch (magicBE) {
    case 0xa1b2c3d4: le = false; nano = false; break;
    case 0xd4c3b2a1: le = true; nano = false; break;
    case 0xa1b23c4d: le = false; nano = true; break;
    case 0x4d3cb2a1: le = true; nano = true; break;
    default: throw new Error(`capture: unknown magic 0x${magicBE.toString(16)}`);
  }
  if (file.length < 24) throw new Error('capture: pcap header truncated');
  const linkType = dv.getUint32(20, le) & 0x0fffffff;
  const out: CaptureRecord[] = [];
  let pos = 24;
  while (pos + 16 <= file.length) {
    const sec = dv.getUint32(pos, le);
    const frac = dv.getUint32(pos + 4, le);
    const incl = dv.getUint32(pos + 8, le);
    const orig = dv.getUint32(pos + 12, le);
    pos += 16;
    if (pos + incl > file.length) throw new Error(`capture: record ${out.length} truncated`);
    out.push({
      index: out.length,
      linkType,
      timestamp: sec + frac / (nano ? 1e9 : 1e6),
      data: file.subarray(pos, pos + incl),
      originalLength: orig,
    });
    pos += incl;
  }
  return out;
}

function parsePcapng(file: Uint8Array, dv: DataView): CaptureRecord[] {
  const out: CaptureRecord[] = [];
  let le = true;
  let ifaces: { linkType: number; tsResol: number }[] = [];
  let pos = 0;
  while (pos + 12 <= file.length) {
    let type = dv.getUint32(pos, le);
    if (type === 0x0a0d0d0a) {
      // Section Header Block: byte order from its magic.
      const bom = dv.getUint32(pos + 8, true);
      le = bom === 0x1a2b3c4d;
      if (!le && dv.getUint32(pos + 8, false) !== 0x1a2b3c4d) throw new Error('capture: bad pcapng byte-order magic');
      type = 0x0a0d0d0a;
      ifaces = [];
    }
    const len = dv.getUint32(pos + 4, le);
    if (len < 12 || pos + len > file.length) throw new Error(`capture: pcapng block at ${pos} truncated`);
    const body = pos + 8;
    switch (type) {
      case 0x00000001: {
        // Interface Description Block: link type, snaplen, options (if_tsresol = 9).
        const linkType = dv.getUint16(body, le);
        let tsResol = 1e-6;
        let opt = body + 8;
        const end = pos + len - 4;
        while (opt + 4 <= end) {
          const code = dv.getUint16(opt, le);
          const olen = dv.getUint16(opt + 2, le);
          if (code === 0) break;
          if (code === 9 && olen >= 1) {
            const v = file[opt + 4];
            tsResol = v & 0x80 ? Math.pow(2, -(v & 0x7f)) : Math.pow(10, -v);
          }
          opt += 4 + ((olen + 3) & ~3);
        }
        ifaces.push({ linkType, tsResol });
        break;
      }
      case 0x00000006: {
        // Enhanced Packet Block.
        const ifId = dv.getUint32(body, le);
        const tsHigh = dv.getUint32(body + 4, le);
        const tsLow = dv.getUint32(body + 8, le);
        const capLen = dv.getUint32(body + 12, le);
        const origLen = dv.getUint32(body + 16, le);
        const iface = ifaces[ifId] ?? { linkType: LINKTYPE_ETHERNET, tsResol: 1e-6 };
        out.push({
          index: out.length,
          linkType: iface.linkType,
          timestamp: (tsHigh * 4294967296 + tsLow) * iface.tsResol,
          data: file.subarray(body + 20, body + 20 + capLen),
          originalLength: origLen,
        });
        break;
      }
      case 0x00000003: {
        // Simple Packet Block: interface 0, no timestamp; captured = min(orig, block room).
        const origLen = dv.getUint32(body, le);
        const room = len - 16;
        const iface = ifaces[0] ?? { linkType: LINKTYPE_ETHERNET, tsResol: 1e-6 };
        out.push({
          index: out.length,
          linkType: iface.linkType,
          timestamp: 0,
          data: file.subarray(body + 4, body + 4 + Math.min(origLen, room)),
          originalLength: origLen,
        });
        break;
      }
      default:
        break;
    }
    pos += len;
  }
  return out;
}
