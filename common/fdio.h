/* common/fdio.h — the write loop every file writer needs.
 * Owns: writing a whole buffer to a descriptor across short writes and EINTR. */
#ifndef SW_COMMON_FDIO_H
#define SW_COMMON_FDIO_H
#include <stddef.h>

/* Write all n bytes of p to fd. 0, or -1 with errno set by write(2). */
int fd_write_all(int fd, const void *p, size_t n);

#endif
