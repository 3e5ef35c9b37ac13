/**
 * ARP (RFC 826) on the virtual link: the gateway's side.
 *
 * Answers requests for the gateway and DNS addresses, and — as a user-mode NAT that is the only
 * other host on the link — for any other host address of the virtual network that is not a
 * guest's: so a guest that talks to 10.0.2.99 gets its packets to us and a prompt refusal
 * (RST / ICMP unreachable, see policy.ts) instead of ARP timeouts. Addresses that guests use
 * (learned from their frames) and addresses DHCP has leased are left to their owners, so several
 * guests on one switch can find each other.
 *
 * Never answered: probes (sender address 0.0.0.0, RFC 5227 §2.1.1) except for our own two
 * addresses — a guest checking that its DHCP lease is free must hear silence — and gratuitous
 * announcements (sender = target), which are only learned from.
 *
 * Learning: the sender of every well-formed ARP packet from a guest address is remembered in the
 * NeighborCache (guest-output.ts), which picks the Ethernet destination of frames to the guest.
 */
import type { Frame } from '../../link/frame';
import type { Meter, Stage } from '../../meter/meter';
import { NAT_ARP } from '../../meter/stages';
import { logOnce } from '../../log';
import { ArpPacket, ARP_REPLY, ARP_REQUEST } from '../../wire/arp';
import { ETH_HLEN, ETHERTYPE_ARP, type GuestOutputQueue } from './guest-output';
import { writeIpv4, type AddressPolicy } from './policy';

const ARP_LEN = 28;

export interface ArpOptions {
  out: GuestOutputQueue;
  policy: AddressPolicy;
  meter: Meter;
  /** The MAC that holds a DHCP lease on `ip`, if any (those addresses are not answered for). */
  leaseHolder?: (ip: number) => Uint8Array | null;
  /** Answer for unused addresses of the virtual network too (default true). */
  answerUnused?: boolean;
}

export class ArpResponder {
  private readonly view = new ArpPacket();
  private readonly stage: Stage;
  private readonly answerUnused: boolean;
  private readonly senderMac = new Uint8Array(6);

  constructor(private readonly opts: ArpOptions) {
    this.stage = opts.meter.stage(NAT_ARP);
    this.answerUnused = opts.answerUnused ?? true;
  }

  input(frame: Frame): void {
    const data = frame.data;
    const arp = this.view.wrap(data, ETH_HLEN, data.length - ETH_HLEN);
    const err = arp.check();
    if (err) return this.drop(`bad-${err.code}`);
    this.stage.pass(1, data.length);
    const op = arp.operation;
    const senderMac = this.senderMac;
    arp.copySenderMac(senderMac);
    const sender = arp.senderIp;
    const target = arp.targetIp;
    const policy = this.opts.policy;
    const neighbors = this.opts.out.neighbors;
    if (policy.isGuestSource4(sender)) neighbors.learn4(sender, senderMac);
    else if (sender !== 0) return this.drop('foreign-sender');
    if (op !== ARP_REQUEST) {
      if (op !== ARP_REPLY) this.drop('unknown-operation');
      return;
    }
    if (sender === target) return; // gratuitous: learned above
    if (!this.answersFor(target, sender, senderMac)) return;
    this.reply(senderMac, sender, target);
  }

  private answersFor(target: number, sender: number, senderMac: Uint8Array): boolean {
    const policy = this.opts.policy;
    if (policy.isOurs4(target)) return true;
    if (sender === 0 || !this.answerUnused) return false;
    if (!policy.isGuestSource4(target)) return false; // outside the network, network/broadcast address
    if (this.opts.out.neighbors.has4(target)) return false; // a guest lives there
    const holder = this.opts.leaseHolder?.(target);
    if (holder && !sameMac(holder, senderMac)) return false; // leased to another guest
    if (holder) return false; // the sender's own lease: never claim it
    return true;
  }

  private reply(mac: Uint8Array, ip: number, answered: number): void {
    const out = this.opts.out;
    const o = out.beginEthernet(mac, ETHERTYPE_ARP, ARP_LEN);
    if (!o) return this.drop('no-buffer');
    const b = o.buf;
    const at = o.l4Offset;
    b[at] = 0;
    b[at + 1] = 1; // Ethernet
    b[at + 2] = 0x08;
    b[at + 3] = 0x00; // IPv4
    b[at + 4] = 6;
    b[at + 5] = 4;
    b[at + 6] = 0;
    b[at + 7] = ARP_REPLY;
    for (let i = 0; i < 6; i++) {
      b[at + 8 + i] = out.gatewayMac[i];
      b[at + 18 + i] = mac[i];
    }
    writeIpv4(b, at + 14, answered);
    writeIpv4(b, at + 24, ip);
    out.commit(o);
  }

  private drop(reason: string): void {
    if (this.stage.dropped(reason)) logOnce(`nat.arp.${reason}`, `ARP frame dropped: ${reason}`);
  }
}

function sameMac(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false;
  return true;
}
