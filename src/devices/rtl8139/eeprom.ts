/**
 * Eeprom93C46: the serial EEPROM beside an RTL8139 (64 words of 16 bits, "x16" organisation),
 * bit-banged by the driver through the 9346CR register in programming mode (EEM = 10): EECS is
 * chip select, EESK the shift clock, EEDI data into the EEPROM, EEDO data out of it.
 *
 * Protocol (Microwire 93C46 datasheets; the RTL8139 datasheet §6 "EEPROM (93C46) Contents"):
 *   CS rising edge → the part waits for a start bit: leading 0s are ignored, the first 1 clocked
 *   in (on a rising SK edge) starts a command of 2 opcode bits + 6 address bits, MSB first.
 *     10 aaaaaa  READ   DO shows a dummy 0, then each further rising edge shifts out the next
 *                       data bit, D15 first; reading on past D0 continues with the next word
 *                       (sequential read).
 *     01 aaaaaa  WRITE  16 data bits follow; stored if writes are enabled.
 *     11 aaaaaa  ERASE  word := 0xFFFF if enabled.
 *     00 11xxxx  EWEN   enable writes     00 00xxxx EWDS  disable writes (the power-on state)
 *     00 01xxxx  WRAL   16 data bits, written to every word      00 10xxxx ERAL erase all
 *   CS low ends any command. Programming is instantaneous here; after it DO reads 1 ("ready").
 *
 * States: IDLE (CS low) → WAIT_START → COMMAND (8 bits) → READ | DATA_IN (16 bits) | READY.
 *
 * Linux 8139too first reads word 0 with 8-bit addressing (a 93C56 probe): a 93C46 takes only 6 of
 * those address bits and starts shifting data while the driver is still clocking the last two
 * address bits, so the probe reads back 0x8129 shifted and the driver falls back to 6-bit
 * addressing — exactly what happens with a real 93C46.
 *
 * Contents (RTL8139 datasheet §6): word 0 = 0x8129 (ID), 1 = vendor, 2 = device, 3 = subsystem
 * vendor, 4 = subsystem, 5 = Min_Gnt | Max_Lat << 8, 6 = MSRID | CONFIG3 << 8, 7..9 = Ethernet
 * address (byte 0 in the low half of word 7), 10 = CONFIG0 | CONFIG1 << 8.
 */

export const EEPROM_WORDS = 64;

const enum State {
  Idle,
  WaitStart,
  Command,
  Read,
  DataIn,
  Ready,
}

export interface EepromContents {
  mac: Uint8Array;
  vendorId: number;
  deviceId: number;
  subsystemVendorId: number;
  subsystemId: number;
  minGrant: number;
  maxLatency: number;
  config0: number;
  config1: number;
  config3: number;
}

/** The 64 words an RTL8139 board ships with. */
export function rtl8139EepromImage(c: EepromContents): Uint16Array {
  const w = new Uint16Array(EEPROM_WORDS);
  w[0] = 0x8129;
  w[1] = c.vendorId;
  w[2] = c.deviceId;
  w[3] = c.subsystemVendorId;
  w[4] = c.subsystemId;
  w[5] = (c.minGrant & 0xff) | ((c.maxLatency & 0xff) << 8);
  w[6] = (c.config3 & 0xff) << 8;
  w[7] = c.mac[0] | (c.mac[1] << 8);
  w[8] = c.mac[2] | (c.mac[3] << 8);
  w[9] = c.mac[4] | (c.mac[5] << 8);
  w[10] = (c.config0 & 0xff) | ((c.config1 & 0xff) << 8);
  return w;
}

export class Eeprom93C46 {
  private state = State.Idle;
  private cs = false;
  private sk = false;
  private shift = 0;
  private bits = 0;
  private opcode = 0;
  private address = 0;
  private data = 0;
  private writeEnabled = false;
  /** The EEDO pin. */
  dataOut = 0;

  constructor(readonly words: Uint16Array) {
    if (words.length !== EEPROM_WORDS) throw new RangeError(`a 93C46 holds ${EEPROM_WORDS} words`);
  }

  /** Drive CS, SK and DI (as written to 9346CR in programming mode). */
  setPins(cs: boolean, sk: boolean, di: boolean): void {
    const rising = sk && !this.sk;
    this.sk = sk;
    if (!cs) {
      if (this.cs) this.deselect();
      this.cs = false;
      return;
    }
    if (!this.cs) {
      this.cs = true;
      this.state = State.WaitStart;
      this.dataOut = 1; // ready
      if (!rising) return;
    }
    if (rising) this.clock(di ? 1 : 0);
  }

  private deselect(): void {
    this.state = State.Idle;
    this.dataOut = 0;
  }

  private clock(bit: number): void {
    switch (this.state) {
      case State.WaitStart:
        if (bit === 1) {
          this.state = State.Command;
          this.shift = 0;
          this.bits = 0;
        }
        return;
      case State.Command:
        this.shift = (this.shift << 1) | bit;
        if (++this.bits === 8) this.decode();
        return;
      case State.Read:
        if (this.bits === 0) {
          // sequential read: on to the next word
          this.address = (this.address + 1) & (EEPROM_WORDS - 1);
          this.data = this.words[this.address];
          this.bits = 16;
        }
        this.dataOut = (this.data >>> 15) & 1;
        this.data = (this.data << 1) & 0xffff;
        this.bits--;
        return;
      case State.DataIn:
        this.shift = ((this.shift << 1) | bit) & 0xffff;
        if (++this.bits === 16) this.program();
        return;
      default:
        return; // Ready / Idle: ignore clocks
    }
  }

  private decode(): void {
    this.opcode = this.shift >>> 6;
    this.address = this.shift & 0x3f;
    this.bits = 0;
    switch (this.opcode) {
      case 0b10: // READ
        this.data = this.words[this.address];
        this.bits = 16;
        this.state = State.Read;
        this.dataOut = 0; // the dummy bit
        return;
      case 0b01: // WRITE
        this.shift = 0;
        this.state = State.DataIn;
        return;
      case 0b11: // ERASE
        if (this.writeEnabled) this.words[this.address] = 0xffff;
        this.finish();
        return;
      default: {
        const sub = this.address >>> 4;
        if (sub === 0b11) this.writeEnabled = true;
        else if (sub === 0b00) this.writeEnabled = false;
        else if (sub === 0b10) {
          if (this.writeEnabled) this.words.fill(0xffff);
        } else {
          this.shift = 0;
          this.state = State.DataIn; // WRAL
          return;
        }
        this.finish();
      }
    }
  }

  private program(): void {
    if (this.writeEnabled) {
      if (this.opcode === 0b01) this.words[this.address] = this.shift;
      else this.words.fill(this.shift); // WRAL
    }
    this.finish();
  }

  private finish(): void {
    this.state = State.Ready;
    this.dataOut = 1;
  }

  /** Back to the power-on state of the interface (contents kept). */
  reset(): void {
    this.state = State.Idle;
    this.cs = false;
    this.sk = false;
    this.dataOut = 0;
    this.writeEnabled = false;
  }
}
