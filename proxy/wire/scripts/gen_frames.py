# Builds the hand-made frames of src/testdata.rs (run: python3 gen_frames.py).
import struct, socket
def csum(b):
    if len(b)%2: b+=b'\0'
    s=sum(struct.unpack('!%dH'%(len(b)//2),b))
    while s>>16: s=(s&0xffff)+(s>>16)
    return (~s)&0xffff
def ip(src,dst,payload,ident,ttl=64):
    h=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(payload),ident,0x4000,ttl,6,0,socket.inet_aton(src),socket.inet_aton(dst))
    c=csum(h); h=h[:10]+struct.pack('!H',c)+h[12:]
    return h+payload, c
def tcp(src,dst,sp,dp,seq,ack,flags,win,opts,payload):
    assert len(opts)%4==0
    off=(20+len(opts))//4
    h=struct.pack('!HHIIBBHHH',sp,dp,seq,ack,off<<4,flags,win,0,0)+opts
    seg=h+payload
    ph=socket.inet_aton(src)+socket.inet_aton(dst)+struct.pack('!BBH',0,6,len(seg))
    c=csum(ph+seg)
    return seg[:16]+struct.pack('!H',c)+seg[18:], c
def frame(dmac,smac,pkt): return bytes(dmac)+bytes(smac)+b'\x08\x00'+pkt
C='198.51.100.1'; S='198.51.100.2'
cm=[2,0,0,0,0,1]; sm=[2,0,0,0,0,2]
def out(name, f, notes):
    print('// %s' % notes)
    print('const %s: [u8; %d] = [' % (name,len(f)))
    for i in range(0,len(f),16): print('    ' + ', '.join('0x%02x'%x for x in f[i:i+16]) + ',')
    print('];')
# SYN as Linux sends: MSS 1460, SACK_PERM, TS, NOP, WS 7
o=struct.pack('!BBH',2,4,1460)+bytes([4,2])+struct.pack('!BBII',8,10,0x0a0b0c0d,0)+bytes([1,3,3,7])
seg,tc=tcp(C,S,40000,443,0x12345678,0,0x02,64240,o,b'')
pkt,ic=ip(C,S,seg,0x3a6f)
out('LINUX_SYN', frame(sm,cm,pkt), 'ip csum %04x tcp csum %04x'%(ic,tc))
o=struct.pack('!BBH',2,4,1460)+bytes([4,2])+struct.pack('!BBII',8,10,0x11223344,0x0a0b0c0d)+bytes([1,3,3,9])
seg,tc=tcp(S,C,443,40000,0xdeadbeef,0x12345679,0x12,65160,o,b'')
pkt,ic=ip(S,C,seg,0)
out('SYN_ACK', frame(cm,sm,pkt), 'ip csum %04x tcp csum %04x'%(ic,tc))
o=bytes([1,1])+struct.pack('!BBII',8,10,0x0a0b0d00,0x11223400)+bytes([1,1,5,18])+struct.pack('!IIII',0x12345679+3000,0x12345679+4000,0x12345679+5000,0x12345679+6000)
seg,tc=tcp(C,S,40000,443,0x12345679,0xdeadbef0+1000,0x18,501,o,b'hello, sluice\n')
pkt,ic=ip(C,S,seg,0x3a70)
out('DATA_SACK', frame(sm,cm,pkt), 'ip csum %04x tcp csum %04x'%(ic,tc))
