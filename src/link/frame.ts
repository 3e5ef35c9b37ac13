/**
 * Frame: one Ethernet frame as a view, plus offload metadata with virtio-net header meaning
 * (virtio 1.x §5.1.6, struct virtio_net_hdr). A 64 KiB TSO super-frame from a virtio guest stays
 * one Frame from the device to one host `write`; a checksum left for "someone later" is described
 * by csumStart/csumOffset exactly as the guest (or the kernel, through a tap) described it.
 *
 * Ownership: a Frame handed to a receive handler is valid only during that call — `data` may be
 * a view into a guest ring or a reused read buffer. A receiver that keeps bytes must copy them
 * (through the meter, so the copy is counted).
 */

/** virtio_net_hdr.flags */
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;

/** virtio_net_hdr.gso_type */
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_UDP_L4 = 5;
export const GSO_ECN = 0x80;

/** Size of the virtio-net header with num_buffers (VERSION_1 / MRG_RXBUF layout). */
export const VNET_HDR_LEN = 12;

export interface Frame {
  /** The Ethernet frame, destination MAC first. */
  data: Uint8Array;
  /** VNET_F_* bits. */
  flags: number;
  /** GSO_* type; GSO_NONE for an ordinary frame. */
  gsoType: number;
  /** Segment payload size (MSS) when gsoType is not GSO_NONE. */
  gsoSize: number;
  /** Length of Ethernet + IP + L4 headers, as a hint (may be 0). */
  hdrLen: number;
  /** With VNET_F_NEEDS_CSUM: the checksum covers data[csumStart..] and is stored at csumStart+csumOffset. */
  csumStart: number;
  csumOffset: number;
}

/** A frame with no offloads: every checksum is already correct, no segmentation pending. */
export function plainFrame(data: Uint8Array): Frame {
  return { data, flags: 0, gsoType: GSO_NONE, gsoSize: 0, hdrLen: 0, csumStart: 0, csumOffset: 0 };
}

/** Reset a (pooled) frame to describe `data` with no offloads. */
export function resetFrame(frame: Frame, data: Uint8Array): Frame {
  frame.data = data;
  frame.flags = 0;
  frame.gsoType = GSO_NONE;
  frame.gsoSize = 0;
  frame.hdrLen = 0;
  frame.csumStart = 0;
  frame.csumOffset = 0;
  return frame;
}

/** Read a virtio_net_hdr (little endian) at `off` of `buf` into `frame`'s metadata. */
export function readVnetHeader(buf: Uint8Array, off: number, frame: Frame): void {
  frame.flags = buf[off];
  frame.gsoType = buf[off + 1];
  frame.hdrLen = buf[off + 2] | (buf[off + 3] << 8);
  frame.gsoSize = buf[off + 4] | (buf[off + 5] << 8);
  frame.csumStart = buf[off + 6] | (buf[off + 7] << 8);
  frame.csumOffset = buf[off + 8] | (buf[off + 9] << 8);
}

/** Write `frame`'s metadata as a virtio_net_hdr (10 bytes; num_buffers is the caller's). */
export function writeVnetHeader(frame: Frame, buf: Uint8Array, off: number): void {
  buf[off] = frame.flags;
  buf[off + 1] = frame.gsoType;
  buf[off + 2] = frame.hdrLen & 0xff;
  buf[off + 3] = frame.hdrLen >>> 8;
  buf[off + 4] = frame.gsoSize & 0xff;
  buf[off + 5] = frame.gsoSize >>> 8;
  buf[off + 6] = frame.csumStart & 0xff;
  buf[off + 7] = frame.csumStart >>> 8;
  buf[off + 8] = frame.csumOffset & 0xff;
  buf[off + 9] = frame.csumOffset >>> 8;
}
