/* bench/files.py's load: open() and close() a path as fast as asked, for a time.
 * usage: openloop PATH MODE(r|w) RATE(0 = flat out) SECONDS  -> prints "opens seconds" */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s PATH r|w RATE SECONDS\n", argv[0]);
		return 2;
	}
	int flags = argv[2][0] == 'w' ? O_WRONLY | O_CREAT : O_RDONLY;
	double rate = atof(argv[3]), seconds = atof(argv[4]);
	double start = now(), end = start + seconds, t = start;
	long n = 0;

	while (t < end) {
		for (int i = 0; i < 64; i++) { /* the clock read every 64 opens, not each */
			if (rate && n >= (t - start) * rate)
				break;
			int fd = open(argv[1], flags, 0600);
			if (fd >= 0)
				close(fd);
			n++;
		}
		t = now();
		if (rate && n >= (t - start) * rate)
			usleep(200);
	}
	printf("%ld %f\n", n, now() - start);
	return 0;
}
