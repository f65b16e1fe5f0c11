/*
 * LD_PRELOAD shim for the F14 storage-fault test (tests/abuse/test_storage_faults.py).
 *
 * While the file named by MAILGATE_FSYNC_EIO_TRIGGER exists, fsync() and fdatasync()
 * fail with EIO without touching the file, as a failing disk or a lost writeback does.
 * Otherwise they call the real libc functions. Each injected failure appends one line
 * to the file named by MAILGATE_FSYNC_EIO_LOG (if set), so the test can prove the fault
 * was actually hit rather than passing because nothing ever synced.
 *
 * SQLite (libsqlite3.so, linked dynamically by Python's _sqlite3) calls these through
 * the PLT, so symbol interposition reaches it; so does Python's own os.fsync.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*sync_fn)(int);

static int tripped(const char *name, int fd) {
    const char *trigger = getenv("MAILGATE_FSYNC_EIO_TRIGGER");
    if (trigger == NULL || access(trigger, F_OK) != 0) {
        return 0;
    }
    const char *log = getenv("MAILGATE_FSYNC_EIO_LOG");
    if (log != NULL) {
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (out >= 0) {
            char line[64];
            int n = snprintf(line, sizeof line, "%s %d\n", name, fd);
            if (n > 0) {
                ssize_t ignored = write(out, line, (size_t)n);
                (void)ignored;
            }
            close(out);
        }
    }
    return 1;
}

int fsync(int fd) {
    static sync_fn real;
    int saved = errno;
    if (tripped("fsync", fd)) {
        errno = EIO;
        return -1;
    }
    errno = saved;
    if (real == NULL) {
        real = (sync_fn)dlsym(RTLD_NEXT, "fsync");
    }
    return real(fd);
}

int fdatasync(int fd) {
    static sync_fn real;
    int saved = errno;
    if (tripped("fdatasync", fd)) {
        errno = EIO;
        return -1;
    }
    errno = saved;
    if (real == NULL) {
        real = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
    }
    return real(fd);
}
