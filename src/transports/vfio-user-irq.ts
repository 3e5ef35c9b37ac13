/**
 * VfioUserInterrupts: a vfio-user device's interrupts as eventfds handed over by the client with
 * DEVICE_SET_IRQS (vfio-user.rst "VFIO_USER_DEVICE_SET_IRQS"; the semantics are VFIO's,
 * linux/vfio.h and drivers/vfio/pci/vfio_pci_intrs.c).
 *
 * INTx (index 0, one vector) follows kernel VFIO's automasking: when the device's line is asserted
 * and INTx is not masked, the trigger eventfd is written once and INTx becomes masked; it stays
 * masked until the client unmasks it — with SET_IRQS(INTX, DATA_NONE|UNMASK) (QEMU under TCG sends
 * this right after the guest's next BAR access, which it takes as the EOI), or through a resample
 * eventfd given with SET_IRQS(INTX, DATA_EVENTFD|UNMASK) (QEMU with a KVM resampling irqfd),
 * watched here: each event there is an unmask. Setting a trigger eventfd starts unmasked (and
 * signals if the line is up).
 *
 * What happens at unmask while the line is still asserted: kernel VFIO signals again at once.
 * With QEMU's "a BAR access is the EOI" rule that unmask comes right after the guest handler's
 * *first* access — typically its read of the interrupt status, before it acknowledged anything —
 * so re-signalling then doubles nearly every interrupt (measured: 57% of them with 8139too). Here
 * the unmask re-signals only for causes the guest may not have seen: a cause that arrived while
 * masked and after the guest's last BAR access (`noteAccess`, called by the transport before it
 * performs each BAR access). A cause arriving while unmasked signals at once, even if the line
 * was already up (PciHost.interruptCause). So an interrupt the guest has not looked at is never
 * lost, and one it is handling is not delivered twice.
 *
 * MSI (index 1, as many vectors as the device's MSI capability offers, 0 or 1 here) is edge:
 * while the client has an eventfd on vector 0 (QEMU assigns one when the guest enables MSI, and
 * disables INTx), each rising edge of the device's line writes it. MSI-X: none. ERR (3) and
 * REQ (4): one eventfd each is accepted and kept (QEMU asks for them; this device never raises
 * them).
 *
 * Validation follows vfio_set_irqs_validate_and_prepare: exactly one data type and one action,
 * start + count within the vectors of the index, count 0 only as DATA_NONE|TRIGGER ("disable"),
 * fds only with DATA_EVENTFD — either one per vector or none at all (QEMU sends a run of "-1"
 * entries as a message without fds: de-assign). Anything else is EINVAL.
 */
import { Errno } from '../native/errors';
import { FdWatcher, POLL_READABLE } from '../native/watcher';
import { eventfdRead, eventfdWrite } from '../native/mmap';
import { setNonBlocking, type OwnedFd } from '../native/fd';
import type { Stage } from '../meter/meter';
import { log } from '../log';
import {
  IRQ_COUNT,
  IRQ_ERR,
  IRQ_INFO_AUTOMASKED,
  IRQ_INFO_EVENTFD,
  IRQ_INFO_MASKABLE,
  IRQ_INFO_NORESIZE,
  IRQ_INTX,
  IRQ_MSI,
  IRQ_MSIX,
  IRQ_REQ,
  IRQ_SET_ACTION_MASK,
  IRQ_SET_ACTION_MASK_ALL,
  IRQ_SET_ACTION_TRIGGER,
  IRQ_SET_DATA_BOOL,
  IRQ_SET_DATA_EVENTFD,
  IRQ_SET_DATA_MASK,
  IRQ_SET_DATA_NONE,
} from './vfio-user-protocol';

const EINVAL = Errno.EINVAL;

export interface InterruptCounters {
  /** INTx trigger eventfd writes. */
  intx: number;
  /** MSI eventfd writes. */
  msi: number;
  /** INTx unmasks (message or resample). */
  unmasks: number;
  /** Unmasks that signalled again at once because the line was still asserted. */
  resignals: number;
}

export class VfioUserInterrupts {
  private intxTrigger: OwnedFd | null = null;
  private intxMasked = false;
  private resample: { fd: OwnedFd; watcher: FdWatcher } | null = null;
  private readonly msi: Array<OwnedFd | null>;
  private readonly slots: Array<OwnedFd | null> = [null, null]; // ERR, REQ
  private level = false;
  /** A cause arrived while masked, after the guest last touched the device. */
  private unseen = false;
  readonly counters: InterruptCounters = { intx: 0, msi: 0, unmasks: 0, resignals: 0 };

  constructor(
    readonly name: string,
    private readonly stage: Stage,
    readonly msiVectors: number,
    readonly hasIntx = true,
  ) {
    this.msi = new Array<OwnedFd | null>(msiVectors).fill(null);
  }

  /** Vectors of `index` (DEVICE_GET_IRQ_INFO count). */
  count(index: number): number {
    switch (index) {
      case IRQ_INTX:
        return this.hasIntx ? 1 : 0;
      case IRQ_MSI:
        return this.msiVectors;
      case IRQ_MSIX:
        return 0;
      case IRQ_ERR:
      case IRQ_REQ:
        return 1;
      default:
        return 0;
    }
  }

  /** DEVICE_GET_IRQ_INFO flags of `index`. */
  infoFlags(index: number): number {
    if (index === IRQ_INTX) return IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE | IRQ_INFO_AUTOMASKED;
    if (index === IRQ_MSI || index === IRQ_MSIX) return IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE;
    return IRQ_INFO_EVENTFD;
  }

  get intxIsMasked(): boolean {
    return this.intxMasked;
  }

  get msiEnabled(): boolean {
    return this.msi.some((f) => f !== null);
  }

  /** The device's interrupt line (PciDevice.onInterrupt): a rising line is a new cause. */
  setLevel(asserted: boolean): void {
    const rising = asserted && !this.level;
    this.level = asserted;
    if (rising) this.cause();
  }

  /** A new interrupt cause (the line rose, or a cause arrived while it was up). */
  cause(): void {
    if (this.msiEnabled) {
      this.fireMsi(0);
      return;
    }
    if (!this.level) return;
    if (this.intxMasked) this.unseen = true;
    else this.signalIntx();
  }

  /** The guest is about to access a BAR: it sees the device's state from now on. */
  noteAccess(): void {
    this.unseen = false;
  }

  private signalIntx(): void {
    if (!this.level || this.intxMasked || this.intxTrigger === null) return;
    eventfdWrite(this.intxTrigger, 1);
    this.intxMasked = true;
    this.unseen = false;
    this.counters.intx++;
    this.stage.pass(1, 0);
  }

  private unmaskIntx(): void {
    this.counters.unmasks++;
    if (!this.intxMasked) return;
    this.intxMasked = false;
    if (this.unseen && this.level && this.intxTrigger !== null && !this.msiEnabled) {
      this.counters.resignals++;
      this.signalIntx();
    }
  }

  private fireMsi(vector: number): void {
    const fd = this.msi[vector];
    if (!fd) return;
    eventfdWrite(fd, 1);
    this.counters.msi++;
    this.stage.pass(1, 0);
  }

  /**
   * DEVICE_SET_IRQS. `data` holds the bool bytes (DATA_BOOL); `fds` the eventfds that came with
   * the message — the ones used are replaced by null in the array (the caller closes the rest).
   * Returns 0 or an errno.
   */
  set(flags: number, index: number, start: number, count: number, data: Uint8Array, fds: Array<OwnedFd | null>): number {
    const dataType = flags & IRQ_SET_DATA_MASK;
    const action = flags & IRQ_SET_ACTION_MASK_ALL;
    if ((flags & ~(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_MASK_ALL)) !== 0) return EINVAL;
    if (!oneBit(dataType) || !oneBit(action)) return EINVAL;
    if (index < 0 || index >= IRQ_COUNT) return EINVAL;
    const max = this.count(index);
    if (max === 0) return EINVAL;
    if (count === 0 && !(dataType === IRQ_SET_DATA_NONE && action === IRQ_SET_ACTION_TRIGGER)) return EINVAL;
    if (start < 0 || count < 0 || start + count > max) return EINVAL;
    if (dataType === IRQ_SET_DATA_BOOL && data.length < count) return EINVAL;
    if (dataType === IRQ_SET_DATA_EVENTFD) {
      if (fds.length !== count && fds.length !== 0) return EINVAL;
    } else if (fds.length !== 0) return EINVAL;

    const on = (k: number): boolean => dataType === IRQ_SET_DATA_NONE || (dataType === IRQ_SET_DATA_BOOL && data[k] !== 0);
    switch (index) {
      case IRQ_INTX:
        return this.setIntx(dataType, action, count, on, fds);
      case IRQ_MSI:
        if (action !== IRQ_SET_ACTION_TRIGGER) return EINVAL;
        if (count === 0) {
          for (let v = 0; v < this.msi.length; v++) this.closeSlot(this.msi, v);
          return 0;
        }
        if (dataType === IRQ_SET_DATA_EVENTFD) {
          const wasEnabled = this.msiEnabled;
          for (let k = 0; k < count; k++) {
            this.closeSlot(this.msi, start + k);
            if (fds.length > 0) {
              this.msi[start + k] = fds[k];
              fds[k] = null;
            }
          }
          // an interrupt pending when MSI comes on is delivered (PCI 3.0 §6.8.1.3)
          if (!wasEnabled && this.msiEnabled && this.level) this.fireMsi(0);
          return 0;
        }
        for (let k = 0; k < count; k++) if (on(k)) this.fireMsi(start + k);
        return 0;
      default: {
        // ERR, REQ
        if (action !== IRQ_SET_ACTION_TRIGGER) return EINVAL;
        const slot = index - IRQ_ERR;
        if (count === 0) {
          this.closeSlot(this.slots, slot);
          return 0;
        }
        if (dataType === IRQ_SET_DATA_EVENTFD) {
          this.closeSlot(this.slots, slot);
          if (fds.length > 0) {
            this.slots[slot] = fds[0];
            fds[0] = null;
          }
          return 0;
        }
        const fd = this.slots[slot];
        if (on(0) && fd) eventfdWrite(fd, 1);
        return 0;
      }
    }
  }

  private setIntx(
    dataType: number,
    action: number,
    count: number,
    on: (k: number) => boolean,
    fds: Array<OwnedFd | null>,
  ): number {
    if (action === IRQ_SET_ACTION_TRIGGER) {
      if (count === 0) {
        // disable INTx signalling altogether
        this.intxTrigger?.close();
        this.intxTrigger = null;
        this.dropResample();
        this.intxMasked = false;
        return 0;
      }
      if (dataType === IRQ_SET_DATA_EVENTFD) {
        this.intxTrigger?.close();
        this.intxTrigger = null;
        if (fds.length > 0) {
          this.intxTrigger = fds[0];
          fds[0] = null;
          this.intxMasked = false;
          this.signalIntx();
        }
        return 0;
      }
      // a software trigger: signal the eventfd (VFIO's loopback test), regardless of the line
      if (on(0) && this.intxTrigger) {
        eventfdWrite(this.intxTrigger, 1);
        this.counters.intx++;
      }
      return 0;
    }
    if (action === IRQ_SET_ACTION_MASK) {
      if (dataType === IRQ_SET_DATA_EVENTFD) return EINVAL;
      if (on(0)) this.intxMasked = true;
      return 0;
    }
    // UNMASK
    if (dataType === IRQ_SET_DATA_EVENTFD) {
      this.dropResample();
      const fd = fds.length > 0 ? fds[0] : null;
      if (fd) {
        fds[0] = null;
        setNonBlocking(fd, true);
        const watcher = new FdWatcher(fd, (_events, status) => {
          if (status < 0) {
            log.warn({ device: this.name, status }, `vfio-user ${this.name}: INTx resample fd failed`);
            return;
          }
          eventfdRead(fd);
          this.unmaskIntx();
        });
        watcher.start(POLL_READABLE);
        this.resample = { fd, watcher };
      }
      return 0;
    }
    if (on(0)) this.unmaskIntx();
    return 0;
  }

  private dropResample(): void {
    if (!this.resample) return;
    this.resample.watcher.close();
    this.resample.fd.close();
    this.resample = null;
  }

  private closeSlot(slots: Array<OwnedFd | null>, i: number): void {
    slots[i]?.close();
    slots[i] = null;
  }

  /** Close every eventfd (connection gone). */
  close(): void {
    this.intxTrigger?.close();
    this.intxTrigger = null;
    this.dropResample();
    for (let v = 0; v < this.msi.length; v++) this.closeSlot(this.msi, v);
    this.closeSlot(this.slots, 0);
    this.closeSlot(this.slots, 1);
  }
}

function oneBit(x: number): boolean {
  return x !== 0 && (x & (x - 1)) === 0;
}
