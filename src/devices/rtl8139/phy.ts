/**
 * The RTL8139's built-in 10/100 PHY as the driver sees it: the MII registers mapped into the
 * register file (BMCR 0x62, BMSR 0x64, ANAR 0x66, ANLPAR 0x68, ANER 0x6A — IEEE 802.3 clause 22
 * layouts), the Media Status register (0x58) and CSCR (0x74).
 *
 * The virtual link partner is an autonegotiating 100BASE-TX full-duplex port, so with the link up:
 * BMSR = capabilities | AN complete | link status; ANLPAR = partner abilities with ACK; MSR says
 * 100 Mbit/s, link OK (LINKB = 0 means link *good*). BMSR's link bit is latched-low in IEEE 802.3
 * (a drop stays visible until read); a link that goes down reads down until it is up again and
 * the latch has been read once.
 *
 * Writes: BMCR reset (bit 15) restores the defaults and self-clears; restart-autonegotiation
 * (bit 9) completes at once and self-clears; speed/AN-enable/duplex (bits 13, 12, 8) change only
 * while 9346CR is in config-write mode (datasheet BMCR note; the caller passes `unlocked`).
 * ANAR is writable except its selector field. CSCR's LinkChange bit (11) is set when the link
 * changes and cleared when CSCR is read; its other bits are stored (twister tuning, ignored).
 */
import {
  ANAR_DEFAULT,
  ANER_LP_NWAY,
  BMCR_ANENABLE,
  BMCR_ANRESTART,
  BMCR_FULLDPLX,
  BMCR_LOCKED_BITS,
  BMCR_RESET,
  BMCR_SPEED100,
  BMSR_100FULL,
  BMSR_100HALF,
  BMSR_10FULL,
  BMSR_10HALF,
  BMSR_ANEGCAPABLE,
  BMSR_ANEGCOMPLETE,
  BMSR_ERCAP,
  BMSR_LSTATUS,
  CSCR_LINK_CHANGE,
  CSCR_LINK_OK,
  LPA_ACK,
  MSR_LINKB,
  MSR_RXFCE,
  MSR_TXFCE,
} from './registers';

const BMCR_DEFAULT = BMCR_SPEED100 | BMCR_ANENABLE | BMCR_FULLDPLX;
const BMSR_CAPS = BMSR_100FULL | BMSR_100HALF | BMSR_10FULL | BMSR_10HALF | BMSR_ANEGCAPABLE | BMSR_ERCAP;

export class Phy {
  bmcr = BMCR_DEFAULT;
  anar = ANAR_DEFAULT;
  private up: boolean;
  /** Latched-low link status: false after a drop until BMSR is read with the link up. */
  private latchedUp: boolean;
  private cscrStored = 0;
  private linkChanged = false;
  private msrFlow = 0;

  constructor(linkUp = true) {
    this.up = linkUp;
    this.latchedUp = linkUp;
  }

  get linkUp(): boolean {
    return this.up;
  }

  /** Change the link; returns true when it changed (the caller raises ISR.PUN/LinkChg). */
  setLink(up: boolean): boolean {
    if (up === this.up) return false;
    this.up = up;
    if (!up) this.latchedUp = false;
    this.linkChanged = true;
    return true;
  }

  readBmsr(): number {
    const linkBit = this.latchedUp && this.up;
    this.latchedUp = this.up; // reading releases the latch
    let v = BMSR_CAPS;
    if (linkBit) v |= BMSR_LSTATUS;
    if (this.up && (this.bmcr & BMCR_ANENABLE) !== 0) v |= BMSR_ANEGCOMPLETE;
    return v;
  }

  /** BMSR without side effects (for the TSAD summary, logs, tests). */
  peekBmsr(): number {
    let v = BMSR_CAPS;
    if (this.up && this.latchedUp) v |= BMSR_LSTATUS;
    if (this.up && (this.bmcr & BMCR_ANENABLE) !== 0) v |= BMSR_ANEGCOMPLETE;
    return v;
  }

  readAnlpar(): number {
    return this.up ? ANAR_DEFAULT | LPA_ACK : 0;
  }

  readAner(): number {
    return this.up ? ANER_LP_NWAY : 0;
  }

  writeBmcr(value: number, unlocked: boolean): void {
    if ((value & BMCR_RESET) !== 0) {
      this.bmcr = BMCR_DEFAULT;
      this.anar = ANAR_DEFAULT;
      return;
    }
    const locked = unlocked ? 0 : BMCR_LOCKED_BITS;
    // restart-AN completes at once; reset and restart read back 0
    this.bmcr = ((this.bmcr & locked) | (value & ~locked)) & ~(BMCR_RESET | BMCR_ANRESTART) & 0xffff;
  }

  writeAnar(value: number): void {
    this.anar = (value & ~0x1f) | (ANAR_DEFAULT & 0x1f);
  }

  /** MSR (0x58): flow-control enables as written, link and speed from the PHY. */
  readMsr(): number {
    let v = this.msrFlow;
    if (!this.up) v |= MSR_LINKB;
    // SPEED_10 (bit 3) stays 0: 100 Mbit/s
    return v;
  }

  writeMsr(value: number): void {
    this.msrFlow = value & (MSR_TXFCE | MSR_RXFCE);
  }

  readCscr(): number {
    let v = this.cscrStored & ~(CSCR_LINK_OK | CSCR_LINK_CHANGE);
    if (this.up) v |= CSCR_LINK_OK;
    if (this.linkChanged) v |= CSCR_LINK_CHANGE;
    this.linkChanged = false;
    return v;
  }

  writeCscr(value: number): void {
    this.cscrStored = value & 0xffff;
  }

  /** Power-on defaults (the link itself is not a register: it stays as it is). */
  reset(): void {
    this.bmcr = BMCR_DEFAULT;
    this.anar = ANAR_DEFAULT;
    this.cscrStored = 0;
    this.msrFlow = 0;
  }
}
