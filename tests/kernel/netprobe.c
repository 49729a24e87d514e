// netprobe: one network call, its outcome printed as 0 or the errno (1 = EPERM).
// Built static by the kernel tests (clang -static) so it runs in a busybox container image.
//   netprobe connect IP PORT   TCP connect()
//   netprobe sendto IP PORT    one datagram from an unconnected UDP socket
//   netprobe uring IP PORT     TCP connect through io_uring (IORING_OP_CONNECT)
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
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
