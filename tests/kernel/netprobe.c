// netprobe: one network call, its outcome printed as 0 or the errno (1 = EPERM).
// Built static by the kernel tests (clang -static) so it runs in a busybox container image.
//   netprobe connect IP PORT   TCP connect()
//   netprobe sendto IP PORT    one datagram from an unconnected UDP socket
//   netprobe uring IP PORT     TCP connect through io_uring (IORING_OP_CONNECT)
//   netprobe resolve SERVER NAME PORT   ask SERVER:53 for NAME's A record, connect() to it on
//                                       PORT: prints the address and the outcome
//   netprobe socket raw|packet           make a raw IPv4 (ICMP) or an AF_PACKET socket
//   netprobe unix PATH                   connect() a unix stream socket to PATH
//   netprobe forge NAME IP PORT         answer its own query for NAME with IP, from 127.0.0.1:53
//                                       (a forged answer), then connect() to IP on PORT
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t address(const char *ip, int port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		return sizeof(*a4);
	}
	if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		return sizeof(*a6);
	}
	fprintf(stderr, "netprobe: bad address %s\n", ip);
	exit(2);
}

static int uring_connect(int sock, struct sockaddr_storage *ss, socklen_t len)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	int ring = syscall(__NR_io_uring_setup, 4, &p);
	if (ring < 0)
		return errno;
	size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP)
		sq_size = cq_size = sq_size > cq_size ? sq_size : cq_size;
	char *sq = mmap(0, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
	char *cq = (p.features & IORING_FEAT_SINGLE_MMAP)
			   ? sq
			   : mmap(0, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
	struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		return errno;

	unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
	unsigned index = *tail & *(unsigned *)(sq + p.sq_off.ring_mask);
	struct io_uring_sqe *sqe = &sqes[index];
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_CONNECT;
	sqe->fd = sock;
	sqe->addr = (unsigned long)ss;
	sqe->off = len;
	((unsigned *)(sq + p.sq_off.array))[index] = index;
	__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return errno;
	unsigned head = __atomic_load_n((unsigned *)(cq + p.cq_off.head), __ATOMIC_ACQUIRE);
	struct io_uring_cqe *cqe =
		&((struct io_uring_cqe *)(cq + p.cq_off.cqes))[head & *(unsigned *)(cq + p.cq_off.ring_mask)];
	return cqe->res < 0 ? -cqe->res : 0;
}

/* A standard query for name's A record into buf: its length. */
static int dns_query(unsigned char *buf, const char *name)
{
	int n = 12;
	memset(buf, 0, 12);
	buf[0] = getpid() >> 8, buf[1] = getpid(); /* id */
	buf[2] = 0x01; /* recursion desired */
	buf[5] = 1; /* one question */
	for (const char *label = name; *label;) {
		const char *dot = strchr(label, '.');
		int len = dot ? dot - label : (int)strlen(label);
		buf[n++] = len;
		memcpy(buf + n, label, len);
		n += len;
		label += len + (dot ? 1 : 0);
	}
	buf[n++] = 0;
	buf[n++] = 0, buf[n++] = 1; /* A */
	buf[n++] = 0, buf[n++] = 1; /* IN */
	return n;
}

/* The first A record of the answer in buf (len bytes) into addr: 0, or -1 if none. */
static int dns_first_a(const unsigned char *buf, int len, struct in_addr *addr)
{
	int off = 12;
	while (off < len && buf[off])
		off += buf[off] + 1;
	off += 5; /* the root label, QTYPE, QCLASS */
	for (int left = buf[6] << 8 | buf[7]; left > 0 && off < len; left--) {
		if ((buf[off] & 0xc0) == 0xc0)
			off += 2;
		else {
			while (off < len && buf[off])
				off += buf[off] + 1;
			off++;
		}
		if (off + 10 > len)
			return -1;
		int type = buf[off] << 8 | buf[off + 1], rdlen = buf[off + 8] << 8 | buf[off + 9];
		if (type == 1 && rdlen == 4 && off + 14 <= len) {
			memcpy(addr, buf + off + 10, 4);
			return 0;
		}
		off += 10 + rdlen;
	}
	return -1;
}

static int connect_to(const char *ip, int port)
{
	struct sockaddr_storage ss;
	socklen_t len = address(ip, port, &ss);
	int sock = socket(ss.ss_family, SOCK_STREAM, 0);
	int err = connect(sock, (struct sockaddr *)&ss, len) < 0 ? errno : 0;
	close(sock);
	return err;
}

static int resolve(const char *server, const char *name, int port)
{
	unsigned char buf[512];
	struct sockaddr_storage ss;
	socklen_t len = address(server, 53, &ss);
	int sock = socket(AF_INET, SOCK_DGRAM, 0);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int n = dns_query(buf, name);
	struct in_addr addr;
	if (sendto(sock, buf, n, 0, (struct sockaddr *)&ss, len) < 0 || (n = recv(sock, buf, sizeof(buf), 0)) < 12 ||
	    dns_first_a(buf, n, &addr)) {
		fprintf(stderr, "netprobe: no answer for %s\n", name);
		return 2;
	}
	char text[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &addr, text, sizeof(text));
	printf("%s %d\n", text, connect_to(text, port));
	return 0;
}

static int forge(const char *name, const char *ip, int port)
{
	unsigned char buf[512];
	struct sockaddr_storage ss, peer;
	socklen_t len = address("127.0.0.1", 53, &ss), plen = sizeof(peer);
	int server = socket(AF_INET, SOCK_DGRAM, 0), client = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(server, (struct sockaddr *)&ss, len) < 0 || connect(client, (struct sockaddr *)&ss, len) < 0) {
		perror("netprobe: forge");
		return 2;
	}
	int n = dns_query(buf, name);
	send(client, buf, n, 0);
	n = recvfrom(server, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen);
	buf[2] = 0x81, buf[3] = 0x80, buf[7] = 1; /* a response, no error, one answer: */
	unsigned char record[16] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4}; /* the question's name, A, IN, 1 h */
	inet_pton(AF_INET, ip, record + 12);
	memcpy(buf + n, record, sizeof(record));
	sendto(server, buf, n + sizeof(record), 0, (struct sockaddr *)&peer, plen);
	n = recv(client, buf, sizeof(buf), 0); /* read by the container as a resolver's answer */
	printf("%d\n", connect_to(ip, port));
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	if (argc == 5 && strcmp(argv[1], "resolve") == 0)
		return resolve(argv[2], argv[3], atoi(argv[4]));
	if (argc == 5 && strcmp(argv[1], "forge") == 0)
		return forge(argv[2], argv[3], atoi(argv[4]));
	if (argc == 3 && strcmp(argv[1], "unix") == 0) {
		struct sockaddr_un un = {.sun_family = AF_UNIX};
		strncpy(un.sun_path, argv[2], sizeof(un.sun_path) - 1);
		int sock = socket(AF_UNIX, SOCK_STREAM, 0);
		printf("%d\n", connect(sock, (struct sockaddr *)&un, sizeof(un)) < 0 ? errno : 0);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "socket") == 0) {
		int packet = strcmp(argv[2], "packet") == 0;
		int sock = packet ? socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)) : socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
		printf("%d\n", sock < 0 ? errno : 0);
		return 0;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: netprobe connect|sendto|uring IP PORT\n");
		return 2;
	}
	socklen_t len = address(argv[2], atoi(argv[3]), &ss);
	int udp = strcmp(argv[1], "sendto") == 0;
	int sock = socket(ss.ss_family, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
	int err = 0;
	if (sock < 0)
		err = errno;
	else if (udp)
		err = sendto(sock, "x", 1, 0, (struct sockaddr *)&ss, len) < 0 ? errno : 0;
	else if (strcmp(argv[1], "uring") == 0)
		err = uring_connect(sock, &ss, len);
	else if (strcmp(argv[1], "connect") == 0)
		err = connect(sock, (struct sockaddr *)&ss, len) < 0 ? errno : 0;
	else
		return 2;
	printf("%d\n", err);
	return 0;
}
