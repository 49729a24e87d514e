/* The tests' attacker: one static binary (it runs inside a busybox container image) that
 * reaches a file the way a process trying to get past an exec or open deny would.
 *
 *   attack hello                      print "RAN" (the forbidden binary is a copy of this one)
 *   attack exec PATH                  execve(PATH)
 *   attack execfd PATH                open(PATH) then execveat(fd, "", AT_EMPTY_PATH)
 *   attack procfd PATH                open(PATH) then execve("/proc/self/fd/N")
 *   attack execat DIR NAME            execveat(open(DIR), NAME)
 *   attack memfd PATH                 copy PATH into a memfd, execveat(memfd, "", AT_EMPTY_PATH)
 *   attack chroot DIR exec|read PATH  chroot(DIR), then exec or read PATH
 *   attack read PATH                  open and print the file
 *   attack openat2 PATH               openat2(AT_FDCWD, PATH) and print it
 *   attack reopen PATH r|w            open(PATH, O_PATH), then /proc/self/fd/N for reading or writing
 *   attack trunc PATH                 open(PATH, O_RDONLY | O_TRUNC)
 *   attack truncate PATH              truncate(PATH, 0)
 *   attack rename FROM TO             rename(FROM, TO)
 *   attack write PATH                 open(PATH, O_WRONLY) and write "x"
 *   attack uring                      io_uring_setup()
 *   attack clonefiles PATH            clone(CLONE_FILES) a child that reads fd 3 while the parent opens PATH
 *   attack getfd PATH                 a child opens PATH; pidfd_getfd() takes its descriptor, prints the file
 *   attack int80read PATH             open(PATH) as a 32-bit system call (int 0x80), then print the file
 *   attack int80rename FROM TO        rename(FROM, TO) as a 32-bit system call
 *   attack int80socket                socket(AF_PACKET, SOCK_RAW, 0) as a 32-bit system call
 *
 * Prints what it got (a file's bytes, "RAN", "ring", "child ...") on stdout; a call that
 * fails prints "errno N" and exits 1. A deny kills it before it prints anything. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int fail(const char *what)
{
	printf("errno %d (%s)\n", errno, what);
	return 1;
}

static int cat(int fd)
{
	char buf[256];
	ssize_t n;

	if (fd < 0)
		return fail("open");
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, n, stdout);
	return 0;
}

static int execveat_(int fd, const char *name, char **argv, int flags)
{
	return syscall(SYS_execveat, fd, name, argv, environ, flags);
}

static char *hello[] = {"forbidden", "hello", NULL};

static int child_reads(void *arg)
{
	(void)arg;
	for (int i = 0; i < 2000; i++) { /* read whatever the parent opens as fd 3 */
		char buf[64];
		ssize_t n = pread(3, buf, sizeof(buf), 0);
		if (n > 0) {
			printf("child read %.*s\n", (int)n, buf);
			return 0;
		}
		usleep(1000);
	}
	return 2;
}

static int clone_files(const char *path)
{
	static char stack[1 << 16];

	while (dup(0) < 3) /* fd 3 is the next one: what the parent opens */
		;
	close(3);
	pid_t child = clone(child_reads, stack + sizeof(stack), CLONE_FILES | SIGCHLD, NULL);
	if (child < 0)
		return fail("clone");
	usleep(20000);
	int fd = open(path, O_RDONLY);
	int status = 0;
	waitpid(child, &status, 0);
	printf("child %s %d fd %d\n", WIFSIGNALED(status) ? "killed" : "exited",
	       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), fd);
	return 0;
}

static int get_fd(const char *path)
{
	int ready[2], fd = -1;

	if (pipe(ready))
		return fail("pipe");
	pid_t child = fork();
	if (child == 0) { /* holds the file open for its parent to take */
		fd = open(path, O_RDONLY);
		if (write(ready[1], &fd, sizeof(fd)) != sizeof(fd))
			_exit(1);
		sleep(5);
		_exit(0);
	}
	if (read(ready[0], &fd, sizeof(fd)) != sizeof(fd) || fd < 0)
		return fail("child open");
	int pidfd = syscall(SYS_pidfd_open, child, 0);
	int got = pidfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	kill(child, SIGKILL);
	if (got < 0)
		return fail("pidfd_getfd");
	lseek(got, 0, SEEK_SET);
	return cat(got);
}

static int exec_memfd(const char *path)
{
	int in = open(path, O_RDONLY), mem = memfd_create("payload", 0);
	char buf[65536];
	ssize_t n;

	if (in < 0 || mem < 0)
		return fail("memfd");
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(mem, buf, n) != n)
			return fail("write");
	close(in);
	execveat_(mem, "", hello, AT_EMPTY_PATH);
	return fail("execveat");
}

static int reopen(const char *path, const char *mode)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", open(path, O_PATH));
	if (*mode != 'w')
		return cat(open(proc, O_RDONLY));
	int fd = open(proc, O_WRONLY);
	if (fd < 0)
		return fail("reopen");
	return write(fd, "x", 1) == 1 ? (puts("wrote"), 0) : fail("write");
}

/* A 32-bit system call (int 0x80: the i386 table, 32-bit arguments) with two names, copied
 * below 4 GiB where its pointers can reach them. */
static long int80(long nr, const char *a, const char *b)
{
	char *low = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	long ret;

	if (low == MAP_FAILED)
		return -errno;
	strncpy(low, a, 4095);
	strncpy(low + 4096, b, 4095);
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"((long)low), "c"(nr == 5 ? 0L : (long)(low + 4096)), "d"(0L)
			 : "memory");
	return ret;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc < 2)
		return 2;
	const char *op = argv[1], *a = argc > 2 ? argv[2] : "", *b = argc > 3 ? argv[3] : "";
	char proc[64];

	if (!strcmp(op, "hello"))
		return puts("RAN") < 0;
	if (!strcmp(op, "exec")) {
		execve(a, hello, environ);
		return fail("execve");
	}
	if (!strcmp(op, "execfd")) {
		execveat_(open(a, O_RDONLY | O_CLOEXEC), "", hello, AT_EMPTY_PATH);
		return fail("execveat");
	}
	if (!strcmp(op, "procfd")) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", open(a, O_RDONLY));
		execve(proc, hello, environ);
		return fail("execve");
	}
	if (!strcmp(op, "execat")) {
		execveat_(open(a, O_PATH | O_DIRECTORY), b, hello, 0);
		return fail("execveat");
	}
	if (!strcmp(op, "memfd"))
		return exec_memfd(a);
	if (!strcmp(op, "chroot")) {
		if (argc < 5 || chroot(a) || chdir("/"))
			return fail("chroot");
		if (!strcmp(b, "exec")) {
			execve(argv[4], hello, environ);
			return fail("execve");
		}
		return cat(open(argv[4], O_RDONLY));
	}
	if (!strcmp(op, "read"))
		return cat(open(a, O_RDONLY));
	if (!strcmp(op, "openat2")) {
		struct open_how how = {.flags = O_RDONLY};
		return cat(syscall(SYS_openat2, AT_FDCWD, a, &how, sizeof(how)));
	}
	if (!strcmp(op, "reopen"))
		return reopen(a, b);
	if (!strcmp(op, "trunc"))
		return open(a, O_RDONLY | O_TRUNC) < 0 ? fail("open") : (puts("truncated"), 0);
	if (!strcmp(op, "truncate"))
		return truncate(a, 0) ? fail("truncate") : (puts("truncated"), 0);
	if (!strcmp(op, "rename"))
		return rename(a, b) ? fail("rename") : (puts("renamed"), 0);
	if (!strcmp(op, "write")) {
		int fd = open(a, O_WRONLY);
		if (fd < 0)
			return fail("open");
		return write(fd, "x", 1) == 1 ? (puts("wrote"), 0) : fail("write");
	}
	if (!strcmp(op, "uring")) {
		char params[120] = {0}; /* struct io_uring_params: zeroed asks for defaults */
		long fd = syscall(SYS_io_uring_setup, 4, params);
		return fd < 0 ? fail("io_uring_setup") : (puts("ring"), 0);
	}
	if (!strcmp(op, "clonefiles"))
		return clone_files(a);
	if (!strcmp(op, "getfd"))
		return get_fd(a);
	if (!strcmp(op, "int80read")) { /* i386 open */
		long fd = int80(5, a, "");
		return fd < 0 ? (errno = -fd, fail("int 0x80 open")) : cat(fd);
	}
	if (!strcmp(op, "int80socket")) { /* i386 socket(AF_PACKET, SOCK_RAW, 0) */
		long ret;
		__asm__ volatile("int $0x80" : "=a"(ret) : "a"(359L), "b"(17L), "c"(3L), "d"(0L) : "memory");
		return ret < 0 ? (errno = -ret, fail("int 0x80 socket")) : (puts("socket"), 0);
	}
	if (!strcmp(op, "int80rename")) { /* i386 rename */
		long ret = int80(38, a, b);
		return ret < 0 ? (errno = -ret, fail("int 0x80 rename")) : (puts("renamed"), 0);
	}
	return 2;
}
