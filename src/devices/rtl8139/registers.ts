/**
 * The RTL8139 register map and bit fields (Realtek RTL8139C(L)/RTL8139D datasheets, §5 "Register
 * Descriptions"; the names in comments are the Linux 8139too driver's where they differ). Both
 * BARs — BAR0 I/O and BAR1 memory, 256 bytes each — decode these same offsets.
 */

// ---- offsets ----
export const IDR0 = 0x00; // MAC0: station address, 6 bytes
export const MAR0 = 0x08; // multicast hash filter, 8 bytes
export const TSD0 = 0x10; // TxStatus0..3, 4 × 32 bit
export const TSAD0 = 0x20; // TxAddr0..3, 4 × 32 bit
export const RBSTART = 0x30; // RxBuf
export const ERBCR = 0x34; // early RX byte count (16, RO)
export const ERSR = 0x36; // early RX status (8, RO)
export const CR = 0x37; // ChipCmd
export const CAPR = 0x38; // RxBufPtr (16)
export const CBR = 0x3a; // RxBufAddr (16, RO)
export const IMR = 0x3c; // IntrMask (16)
export const ISR = 0x3e; // IntrStatus (16)
export const TCR = 0x40; // TxConfig (32)
export const RCR = 0x44; // RxConfig (32)
export const TCTR = 0x48; // Timer (32)
export const MPC = 0x4c; // RxMissed (32, 24 bits valid)
export const CR9346 = 0x50; // Cfg9346
export const CONFIG0 = 0x51;
export const CONFIG1 = 0x52;
export const TIMER_INT = 0x54; // TimerInt (32)
export const MSR = 0x58; // MediaStatus
export const CONFIG3 = 0x59;
export const CONFIG4 = 0x5a;
export const HLTCLK = 0x5b; // 'R' run / 'H' halt on old chips
export const MULINT = 0x5c; // MultiIntr (16)
export const RERID = 0x5e; // revision
export const TSAD_SUMMARY = 0x60; // TxSummary (16, RO)
export const BMCR = 0x62; // BasicModeCtrl
export const BMSR = 0x64; // BasicModeStatus
export const ANAR = 0x66; // NWayAdvert
export const ANLPAR = 0x68; // NWayLPAR
export const ANER = 0x6a; // NWayExpansion
export const DIS = 0x6c; // disconnect counter (16, RO)
export const FCSC = 0x6e; // false carrier sense counter (16, RO)
export const NWAYTR = 0x70; // FIFOTMS in Linux (16)
export const REC = 0x72; // RX_ER counter (16, RO)
export const CSCR = 0x74; // (16)
export const PHY1_PARM = 0x78; // PARA78 (32)
export const TW_PARM = 0x7c; // PARA7c (32)
export const PHY2_PARM = 0x80; // (8)
export const CONFIG5 = 0xd8;
export const REGISTER_SPACE = 0x100;

// ---- CR (ChipCmd) ----
export const CR_RST = 0x10;
export const CR_RE = 0x08;
export const CR_TE = 0x04;
export const CR_BUFE = 0x01;

// ---- ISR / IMR ----
export const INT_ROK = 0x0001;
export const INT_RER = 0x0002;
export const INT_TOK = 0x0004;
export const INT_TER = 0x0008;
export const INT_RXOVW = 0x0010;
export const INT_PUN_LINKCHG = 0x0020;
export const INT_FOVW = 0x0040;
export const INT_LENCHG = 0x2000;
export const INT_TIMEOUT = 0x4000;
export const INT_SERR = 0x8000;
/** ISR bits that exist (bits 7..12 are reserved and read 0). */
export const INT_ALL = 0xe07f;

// ---- TSD (transmit status of descriptor) ----
export const TSD_SIZE_MASK = 0x1fff;
export const TSD_OWN = 0x2000;
export const TSD_TUN = 0x4000;
export const TSD_TOK = 0x8000;
export const TSD_ERTXTH_MASK = 0x003f0000;
export const TSD_NCC_MASK = 0x0f000000;
export const TSD_CDH = 0x10000000;
export const TSD_OWC = 0x20000000;
export const TSD_TABT = 0x40000000;
export const TSD_CRS = 0x80000000;
/** What the driver writes: size, OWN (written 0), early TX threshold. The rest is status. */
export const TSD_DRIVER_BITS = TSD_SIZE_MASK | TSD_OWN | TSD_ERTXTH_MASK;
/** The largest frame the transmitter accepts (datasheet TSD: "the maximum … is 1792 bytes"). */
export const TX_MAX_SIZE = 1792;

// ---- TCR ----
export const TCR_CLRABT = 0x00000001;
export const TCR_TXRR_MASK = 0x000000f0;
export const TCR_MXDMA_MASK = 0x00000700;
export const TCR_CRC = 0x00010000;
export const TCR_LBK_MASK = 0x00060000;
export const TCR_LBK_LOOPBACK = 0x00060000;
export const TCR_IFG_MASK = 0x03000000;
/** Hardware version bits (30-26, 23, 22), read-only. */
export const TCR_HWVER_MASK = 0x7cc00000;
/** RTL8139C: Linux 8139too recognises it (HasLWake, no HltClk). */
export const TCR_HWVER_RTL8139C = 0x74000000;
export const TCR_WRITABLE = TCR_TXRR_MASK | TCR_MXDMA_MASK | TCR_CRC | TCR_LBK_MASK | TCR_IFG_MASK;

// ---- RCR ----
export const RCR_AAP = 0x00000001;
export const RCR_APM = 0x00000002;
export const RCR_AM = 0x00000004;
export const RCR_AB = 0x00000008;
export const RCR_AR = 0x00000010;
export const RCR_AER = 0x00000020;
export const RCR_9356SEL = 0x00000040;
export const RCR_WRAP = 0x00000080;
export const RCR_RBLEN_SHIFT = 11;
export const RCR_RBLEN_MASK = 0x00001800;
/** All defined RCR bits except the read-only EEPROM-type bit (9356SEL). */
export const RCR_WRITABLE = 0x0f03ffbf;

// ---- RX packet header (first 4 bytes of each ring entry) ----
export const RXS_ROK = 0x0001;
export const RXS_FAE = 0x0002;
export const RXS_CRC = 0x0004;
export const RXS_LONG = 0x0008;
export const RXS_RUNT = 0x0010;
export const RXS_ISE = 0x0020;
export const RXS_BAR = 0x2000;
export const RXS_PAM = 0x4000;
export const RXS_MAR = 0x8000;

// ---- 9346CR ----
export const EEM_SHIFT = 6;
export const EEM_NORMAL = 0;
export const EEM_AUTOLOAD = 1;
export const EEM_PROGRAM = 2;
export const EEM_CONFIG_WRITE = 3;
export const EE_CS = 0x08;
export const EE_SK = 0x04;
export const EE_DI = 0x02;
export const EE_DO = 0x01;

// ---- CONFIG registers ----
export const CONFIG1_PMEN = 0x01;
export const CONFIG1_IOMAP = 0x04;
export const CONFIG1_MEMMAP = 0x08;
/** CONFIG1 bits software may change (IOMAP/MEMMAP come from the EEPROM). */
export const CONFIG1_WRITABLE = 0xf3;
export const CONFIG3_WRITABLE = 0xf6; // FBtBEn (0) and CardB_En (3) are read-only
export const CONFIG4_WRITABLE = 0xf5;
export const CONFIG5_WRITABLE = 0x7f;

// ---- MSR ----
export const MSR_RXPF = 0x01;
export const MSR_TXPF = 0x02;
export const MSR_LINKB = 0x04; // 1 = link down
export const MSR_SPEED_10 = 0x08;
export const MSR_RXFCE = 0x40;
export const MSR_TXFCE = 0x80;

// ---- MII (BMCR/BMSR/ANAR/ANLPAR/ANER: IEEE 802.3 clause 22 layout) ----
export const BMCR_RESET = 0x8000;
export const BMCR_SPEED100 = 0x2000;
export const BMCR_ANENABLE = 0x1000;
export const BMCR_ANRESTART = 0x0200;
export const BMCR_FULLDPLX = 0x0100;
/** BMCR bits that only change with 9346CR in config-write mode. */
export const BMCR_LOCKED_BITS = BMCR_SPEED100 | BMCR_ANENABLE | BMCR_FULLDPLX;
export const BMSR_100FULL = 0x4000;
export const BMSR_100HALF = 0x2000;
export const BMSR_10FULL = 0x1000;
export const BMSR_10HALF = 0x0800;
export const BMSR_ANEGCOMPLETE = 0x0020;
export const BMSR_ANEGCAPABLE = 0x0008;
export const BMSR_LSTATUS = 0x0004;
export const BMSR_ERCAP = 0x0001;
export const ANAR_DEFAULT = 0x05e1; // pause, 100FD, 100HD, 10FD, 10HD, IEEE 802.3 selector
export const LPA_ACK = 0x4000;
export const ANER_LP_NWAY = 0x0001;
export const CSCR_LINK_OK = 0x0400;
export const CSCR_LINK_CHANGE = 0x0800;
