/*
 * A deliberately tiny TCMU handler used ONLY to prove the VM harness (tests/vm) end to end
 * while tcmu-warden is incomplete. Not the product; no netlink, in-order completion, one
 * device per process, synchronous I/O on the backing file, 512-byte blocks.
 *
 * usage: tcmu-vm-standin --uio /dev/uioN     (same flag as tcmu-warden; SIGTERM stops it)
 */
#define _GNU_SOURCE
/* The kernel header defines struct iovec itself: include it first and keep glibc's out. */
#include <linux/target_core_user.h>
#define __iovec_defined 1
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static char *map;
static int bfd;
static uint64_t nblocks;

static void die(const char *m) { fprintf(stderr, "standin: %s: %s\n", m, strerror(errno)); exit(1); }

static int read_sysfs(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = 0;
    if (r && buf[r - 1] == '\n') buf[r - 1] = 0;
    return 0;
}

/* rsp overlays req (iov_cnt, iovecs): write it only after the request is fully consumed. */
static int checked;
static void sense(struct tcmu_cmd_entry *e, uint8_t key, uint8_t asc, uint8_t ascq)
{
    checked = 1;
    uint8_t *s = (uint8_t *)e->rsp.sense_buffer;
    memset(s, 0, TCMU_SENSE_BUFFERSIZE);
    s[0] = 0x70; s[2] = key; s[7] = 0xa; s[12] = asc; s[13] = ascq;
    e->rsp.scsi_status = 2; /* CHECK CONDITION */
}

/* Copy a reply buffer into the command's Data-In iovecs. */
static void put_data(struct tcmu_cmd_entry *e, const void *src, size_t len)
{
    for (uint32_t i = 0; i < e->req.iov_cnt && len; i++) {
        size_t n = e->req.iov[i].iov_len < len ? e->req.iov[i].iov_len : len;
        memcpy(map + (uintptr_t)e->req.iov[i].iov_base, src, n);
        src = (const char *)src + n; len -= n;
    }
}

static uint64_t be(const uint8_t *p, int n) { uint64_t v = 0; while (n--) v = v << 8 | *p++; return v; }
static void put_be(uint8_t *p, uint64_t v, int n) { while (n--) { p[n] = v & 0xff; v >>= 8; } }

/* READ/WRITE: iovecs map contiguously onto [lba, lba+cnt). */
static void rw(struct tcmu_cmd_entry *e, uint64_t lba, uint64_t cnt, int write)
{
    if (lba + cnt > nblocks || lba + cnt < lba) { sense(e, 5, 0x21, 0); return; }
    off_t off = (off_t)(lba * 512);
    for (uint32_t i = 0; i < e->req.iov_cnt; i++) {
        char *p = map + (uintptr_t)e->req.iov[i].iov_base;
        size_t n = e->req.iov[i].iov_len;
        ssize_t r = write ? pwrite(bfd, p, n, off) : pread(bfd, p, n, off);
        if (r != (ssize_t)n) { sense(e, write ? 3 : 3, write ? 0x0c : 0x11, 0); return; }
        off += n;
    }
}

static void handle(struct tcmu_cmd_entry *e)
{
    uint8_t *c = (uint8_t *)map + e->req.cdb_off;
    uint8_t buf[64];
    memset(buf, 0, sizeof buf);
    checked = 0;
    switch (c[0]) {
    case 0x00: /* TEST UNIT READY */ break;
    case 0x12: /* INQUIRY */
        if (c[1] & 1) {
            if (c[2] != 0) { sense(e, 5, 0x24, 0); break; }
            put_data(e, buf, 4); /* supported pages: only 0x00 */
            break;
        }
        buf[2] = 5; buf[3] = 2; buf[4] = 31; buf[7] = 0x02; /* CMDQUE */
        memcpy(buf + 8, "STANDIN tcmu-vm-standin 0001", 28);
        put_data(e, buf, 36);
        break;
    case 0x25: /* READ CAPACITY(10) */
        put_be(buf, nblocks - 1 > 0xffffffffu ? 0xffffffffu : nblocks - 1, 4);
        put_be(buf + 4, 512, 4);
        put_data(e, buf, 8);
        break;
    case 0x9e: /* SERVICE ACTION IN(16) */
        if ((c[1] & 0x1f) != 0x10) { sense(e, 5, 0x24, 0); break; }
        put_be(buf, nblocks - 1, 8); put_be(buf + 8, 512, 4);
        put_data(e, buf, 32);
        break;
    case 0x1a: /* MODE SENSE(6): header only, no pages */
        buf[0] = 3; put_data(e, buf, 4); break;
    case 0x5a: /* MODE SENSE(10) */
        buf[1] = 6; put_data(e, buf, 8); break;
    case 0x35: case 0x91: /* SYNCHRONIZE CACHE */
        if (fdatasync(bfd)) sense(e, 3, 0x0c, 0);
        break;
    case 0x08: rw(e, be(c + 1, 3) & 0x1fffff, c[4] ? c[4] : 256, 0); break;
    case 0x0a: rw(e, be(c + 1, 3) & 0x1fffff, c[4] ? c[4] : 256, 1); break;
    case 0x28: rw(e, be(c + 2, 4), be(c + 7, 2), 0); break;
    case 0x2a: rw(e, be(c + 2, 4), be(c + 7, 2), 1); break;
    case 0x88: rw(e, be(c + 2, 8), be(c + 10, 4), 0); break;
    case 0x8a: rw(e, be(c + 2, 8), be(c + 10, 4), 1); break;
    default: sense(e, 5, 0x20, 0); /* INVALID COMMAND OPERATION CODE */
    }
    if (!checked) e->rsp.scsi_status = 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--uio")) { fprintf(stderr, "usage: %s --uio /dev/uioN\n", argv[0]); return 2; }
    const char *dev = argv[2], *base = strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev;
    char path[256], name[512], size_s[64];
    snprintf(path, sizeof path, "/sys/class/uio/%s/name", base);
    if (read_sysfs(path, name, sizeof name)) die(path);
    snprintf(path, sizeof path, "/sys/class/uio/%s/maps/map0/size", base);
    if (read_sysfs(path, size_s, sizeof size_s)) die(path);
    size_t map_len = strtoull(size_s, NULL, 16);
    /* tcm-user/<hba>/<dev>/<subtype>/<cfg>: the backing file is the 5th field. */
    char *cfg = name;
    for (int i = 0; i < 4 && cfg; i++) { cfg = strchr(cfg, '/'); if (cfg) cfg++; }
    if (!cfg) { errno = EINVAL; die("uio name"); }
    bfd = open(cfg, O_RDWR | O_CLOEXEC);
    if (bfd < 0) die(cfg);
    struct stat st;
    if (fstat(bfd, &st)) die("fstat");
    nblocks = (uint64_t)st.st_size / 512;

    struct sigaction sa = { .sa_handler = on_term }; /* no SA_RESTART: read() returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0) die(dev);
    map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) die("mmap");
    struct tcmu_mailbox *mb = (struct tcmu_mailbox *)map;
    if (mb->version != 2) { errno = EPROTO; die("mailbox version"); }
    fprintf(stderr, "standin: serving %s (%s, %llu blocks, map 0x%zx)\n", dev, cfg,
            (unsigned long long)nblocks, map_len);

    uint32_t r = mb->cmd_tail, tick;
    unsigned long ncmds = 0;
    while (!stop) {
        uint32_t head = __atomic_load_n(&mb->cmd_head, __ATOMIC_ACQUIRE);
        int done = 0;
        while (r != head) {
            struct tcmu_cmd_entry *e = (void *)(map + mb->cmdr_off + r);
            uint32_t len = tcmu_hdr_get_len(e->hdr.len_op);
            switch (tcmu_hdr_get_op(e->hdr.len_op)) {
            case TCMU_OP_PAD: case TCMU_OP_TMR: break;
            case TCMU_OP_CMD: handle(e); ncmds++; break;
            default: e->hdr.uflags |= TCMU_UFLAG_UNKNOWN_OP;
            }
            r = (r + len) % mb->cmdr_size;
            done = 1;
        }
        if (done) {
            __atomic_store_n(&mb->cmd_tail, r, __ATOMIC_RELEASE);
            if (write(fd, &tick, 4) != 4 && errno != EINTR) break;
        }
        if (read(fd, &tick, 4) != 4) {
            if (errno == EINTR) continue;
            /* EIO: the device was removed; wait for SIGTERM like a daemon would. */
            fprintf(stderr, "standin: %s gone (%s) after %lu commands\n", dev, strerror(errno), ncmds);
            while (!stop) pause();
        }
    }
    fprintf(stderr, "standin: stopping after %lu commands\n", ncmds);
    return 0;
}
