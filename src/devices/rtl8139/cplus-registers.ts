/**
 * The RTL8139C+ "C+ mode" additions to the register map and its 16-byte descriptors (Realtek
 * RTL8139C+ datasheet v1.6: §6 register table — DTCCR 0x10, TNPDS 0x20, THPDS 0x28, TPPoll 0xD9,
 * C+CR 0xE0, IntrMitigate 0xE2, RDSAR 0xE4, ETThR 0xEC; §9 "C+ mode" buffer management — the TX
 * and RX descriptor formats). The names in comments are the Linux 8139cp driver's where they
 * differ. In C+ mode the offsets 0x10-0x2F stop being TSD0-3/TSAD0-3 and hold 64-bit addresses.
 */

// ---- offsets ----
export const DTCCR = 0x10; // StatsAddr: 64-bit address of the 64-byte counter dump, bit 3 = Cmd
export const TNPDS = 0x20; // TxRingAddr: normal-priority TX descriptors (64 bit, 256-byte aligned)
export const THPDS = 0x28; // HiTxRingAddr: high-priority TX descriptors (64 bit)
export const TPPOLL = 0xd9; // TxPoll
export const CPCR = 0xe0; // CpCmd (16)
export const INTR_MITIGATE = 0xe2; // IntrMitigate (16)
export const RDSAR = 0xe4; // RxRingAddr (64 bit)
export const ETTHR = 0xec; // TxThresh: early TX threshold in 32-byte units (8)

// ---- C+CR ----
export const CPCR_RX_VLAN = 0x0040; // RxVlanOn: strip 802.1Q tags into opts2
export const CPCR_RX_CHKSUM = 0x0020; // RxChkSum: check IPv4/TCP/UDP checksums of received frames
export const CPCR_DAC = 0x0010; // PCIDAC
export const CPCR_MULRW = 0x0008; // PCIMulRW
export const CPCR_RX_ON = 0x0002; // CpRxOn: receive through the descriptor ring
export const CPCR_TX_ON = 0x0001; // CpTxOn: transmit from the descriptor rings
export const CPCR_WRITABLE = 0x007b;

// ---- TPPoll ----
export const TPPOLL_HPQ = 0x80; // high-priority queue has work
export const TPPOLL_NPQ = 0x40; // NormalTxPoll
export const TPPOLL_FSWINT = 0x01; // forced software interrupt (ISR.SWInt)

// ---- DTCCR ----
export const DTCCR_CMD = 0x08; // DumpStats: set by the driver, cleared by the chip when the dump is written
export const DTCCR_SIZE = 64;

// ---- ISR / IMR bits that only C+ mode has ----
export const INT_TX_EMPTY = 0x0080; // TxEmpty / TDU: no TX descriptor left to process
export const INT_SW = 0x0100; // SWInt
/** ISR bits of the C+ chip (RxEmpty is the C mode's RXOVW bit: "RX descriptor unavailable"). */
export const INT_ALL_CPLUS = 0xe1ff;

// ---- descriptors: opts1 (dword 0), opts2 (dword 1), buffer address (dwords 2-3) ----
export const DESC_SIZE = 16;
export const DESC_OWN = 0x80000000;
export const DESC_EOR = 0x40000000;
export const DESC_FS = 0x20000000;
export const DESC_LS = 0x10000000;
// TX opts1
export const TX_LGSEN = 0x08000000; // LargeSend: TCP segmentation, MSS in bits 26-16
export const TX_MSS_SHIFT = 16;
export const TX_MSS_MASK = 0x7ff;
export const TX_IPCS = 0x00040000;
export const TX_UDPCS = 0x00020000;
export const TX_TCPCS = 0x00010000;
export const TX_LEN_MASK = 0xffff;
// TX status written back
export const TX_UNF = 0x02000000; // TxFIFOUnder
export const TX_ES = 0x00800000; // TxError summary
// TX opts2
export const TX_TAGC = 0x00020000; // TxVlanTag: insert the tag in bits 15-0 (byte-swapped TCI)
// RX opts1 (status written back)
export const RX_MAR = 0x04000000;
export const RX_PAM = 0x02000000;
export const RX_BAR = 0x01000000;
export const RX_ES = 0x00100000; // RxError summary
export const RX_RUNT = 0x00080000;
export const RX_CRC = 0x00040000;
export const RX_PID_SHIFT = 16; // protocol id (bits 17-16): 0 non-IP, 1 TCP/IP, 2 UDP/IP, 3 other IP
export const RX_PID_TCP = 1;
export const RX_PID_UDP = 2;
export const RX_PID_IP = 3;
export const RX_IPF = 0x00008000;
export const RX_UDPF = 0x00004000;
export const RX_TCPF = 0x00002000;
export const RX_LEN_MASK = 0x1fff; // buffer size (driver) / frame length with FCS (chip)
// RX opts2
export const RX_TAVA = 0x00010000; // RxVlanTagged: the tag is in bits 15-0

/** TCCR hardware version bits of an RTL8139C+ (8139too's table: HW_REVID(1,1,1,0,1,1,0)). */
export const TCR_HWVER_RTL8139CPLUS = 0x74800000;
/** PCI revision ID of a C+ chip: Linux 8139cp binds at 0x20 and up, 8139too below. */
export const RTL8139CPLUS_REVISION = 0x20;
/** The hardware walks at most this many descriptors of a ring without an EOR before it wraps. */
export const RING_MAX_DESCRIPTORS = 1024;
