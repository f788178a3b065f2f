# Captures a closed-port SYN/RST and a short connection on lo (root; loopback only) and
# prints the frames as hex: the source of the KERNEL_* frames in src/testdata.rs.
import socket, struct, threading, time, sys
ETH_P_ALL=3
def csum(b):
    if len(b)%2: b+=b'\0'
    s=sum(struct.unpack('!%dH'%(len(b)//2),b))
    while s>>16: s=(s&0xffff)+(s>>16)
    return s
cap=socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
cap.bind(('lo',0)); cap.settimeout(0.5)
frames=[]
def grab(port_set, dur):
    end=time.time()+dur
    while time.time()<end:
        try: data,addr=cap.recvfrom(65535)
        except socket.timeout: continue
        if addr[2]==4: continue  # PACKET_OUTGOING copy
        if data[12:14]!=b'\x08\x00' or data[23]!=6: continue
        ihl=(data[14]&15)*4; sp,dp=struct.unpack('!HH',data[14+ihl:18+ihl])
        if sp in port_set or dp in port_set: frames.append(data)
# closed port: find one
s=socket.socket(); s.bind(('127.0.0.1',0)); closed=s.getsockname()[1]; s.close()
ls=socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,1); ls.bind(('127.0.0.1',0)); ls.listen(1); lport=ls.getsockname()[1]
t=threading.Thread(target=grab,args=({closed,lport},2.0)); t.start(); time.sleep(0.2)
c=socket.socket()
try: c.connect(('127.0.0.1',closed))
except ConnectionRefusedError: pass
c.close()
c=socket.socket(); c.connect(('127.0.0.1',lport)); a,_=ls.accept()
c.sendall(b'GET / HTTP/1.1\r\n\r\n'); a.recv(100); c.close(); a.close()
t.join()
for f in frames:
    ihl=(f[14]&15)*4; tot=struct.unpack('!H',f[16:18])[0]
    ip=f[14:14+tot]; seg=ip[ihl:]
    ph=ip[12:20]+struct.pack('!BBH',0,6,len(seg))
    ok=csum(ph+seg)==0xffff
    flags=seg[13]
    print(len(f), 'flags=%02x'%flags, 'tcp_csum_ok=',ok, 'ipcsum_ok=', csum(ip[:ihl])==0xffff, f.hex())
