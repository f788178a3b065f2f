#!/usr/bin/env python3
"""Prints the IPv6 and ICMP test frames of src/testdata.rs, checksums computed here
independently of the crate (RFC 1071 sum, RFC 8200 8.1 pseudo-header)."""
import struct, ipaddress
def arr(b): return ', '.join('0x%02x'%x for x in b)
def csum(b):
    if len(b)%2: b+=b'\0'
    s=sum(struct.unpack('!%dH'%(len(b)//2), b))
    while s>>16: s=(s&0xffff)+(s>>16)
    return (~s)&0xffff
src=ipaddress.IPv6Address('2001:db8:100::1').packed
dst=ipaddress.IPv6Address('2001:db8:100::2').packed
opts=struct.pack('!BBH',2,4,1440)+bytes([4,2])+struct.pack('!BBII',8,10,0x0a0b0c0d,0)+bytes([1,3,3,7])
tcp=struct.pack('!HHIIBBHHH',40000,443,0x12345678,0,(40//4)<<4,0x02,64800,0,0)+opts
assert len(tcp)==40
ph=src+dst+struct.pack('!I',len(tcp))+b'\0\0\0'+bytes([6])
c=csum(ph+tcp)
tcp=tcp[:16]+struct.pack('!H',c)+tcp[18:]
ip=struct.pack('!IHBB',6<<28,len(tcp),6,64)+src+dst
eth=bytes([2,0,0,0,0,2, 2,0,0,0,0,1])+struct.pack('!H',0x86dd)
f=eth+ip+tcp
print(len(f), hex(c))
print(', '.join('0x%02x'%x for x in f))
# IPv6 Packet Too Big from router 2001:db8:100::fe to sluice 2001:db8:100::2, MTU 1280,
# quoting sluice's segment 2001:db8:100::2:443 -> 2001:db8:100::1:40000 seq 0xdeadbeef (1281 bytes).
A=lambda s: ipaddress.IPv6Address(s).packed
r,us,cl=A('2001:db8:100::fe'),A('2001:db8:100::2'),A('2001:db8:100::1')
qip=struct.pack('!IHBB',6<<28,1281-40,6,64)+us+cl
qtcp=struct.pack('!HHI',443,40000,0xdeadbeef)
icmp=struct.pack('!BBHI',2,0,0,1280)+qip+qtcp
ph=r+us+struct.pack('!I',len(icmp))+b'\0\0\0'+bytes([58])
c=csum(ph+icmp); icmp=icmp[:2]+struct.pack('!H',c)+icmp[4:]
print('v6', len(icmp), hex(c)); print(arr(icmp))
# ICMPv4 fragmentation needed from 198.51.100.254 to 198.51.100.2, next-hop MTU 1400, quoting
# 198.51.100.2:443 -> 198.51.100.1:40000 seq 0xdeadbeef (1401 bytes, DF, TTL 64, ident 0).
B=lambda s: ipaddress.IPv4Address(s).packed
q=struct.pack('!BBHHHBBH',0x45,0,1401,0,0x4000,64,6,0)+B('198.51.100.2')+B('198.51.100.1')
q=q[:10]+struct.pack('!H',csum(q))+q[12:]
icmp4=struct.pack('!BBHHH',3,4,0,0,1400)+q+qtcp
c4=csum(icmp4); icmp4=icmp4[:2]+struct.pack('!H',c4)+icmp4[4:]
print('v4', len(icmp4), hex(c4)); print(arr(icmp4))
