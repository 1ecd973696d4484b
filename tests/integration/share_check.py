# Run in a guest by tests/integration/share.rs, in a directory shared from
# the host (argv[1]): what a local filesystem does, checked on the share.
# Prints one line per check; the host compares the whole output and then
# checks what the guest left there.
import errno
import fcntl
import os
import struct
import sys

d = sys.argv[1]
os.chdir(d)

# Open, unlink, then use the open file (CPython's test_tempfile does this).
fd = os.open("unlinked", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.unlink("unlinked")
os.write(fd, b"0123456789")
os.ftruncate(fd, 4)
os.fchmod(fd, 0o640)
st = os.fstat(fd)
os.lseek(fd, 0, os.SEEK_SET)
print("unlinked:", os.read(fd, 100), st.st_size, oct(st.st_mode & 0o777), os.path.exists("unlinked"))
os.close(fd)

# POSIX record locks: another process cannot take a lock this one holds.
fd = os.open("locked", os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
pid = os.fork()
if pid == 0:
    other = os.open("locked", os.O_RDWR)
    try:
        fcntl.lockf(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os._exit(0)
    except OSError as e:
        os._exit(1 if e.errno in (errno.EAGAIN, errno.EACCES) else 2)
_, status = os.waitpid(pid, 0)
print("posix lock held against another process:", os.waitstatus_to_exitcode(status) == 1)
fcntl.lockf(fd, fcntl.LOCK_UN)
# OFD locks: a second open file description conflicts, even in one process.
flock = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
second = os.open("locked", os.O_RDWR)
try:
    fcntl.fcntl(second, fcntl.F_OFD_SETLK, flock)
    print("ofd lock held against another open: False")
except OSError as e:
    print("ofd lock held against another open:", e.errno in (errno.EAGAIN, errno.EACCES))
os.close(second)
os.close(fd)

# Modes, symlinks, hard links and mtimes the host will check.
with open("moded", "w") as f:
    f.write("mode\n")
os.chmod("moded", 0o754)
os.symlink("moded", "link")
os.link("moded", "hard")
os.utime("moded", (1234567890, 1234567890))
print("guest sees its link:", os.readlink("link"), os.stat("hard").st_nlink)

# What the host made before the run.
st = os.lstat("host-link")
print("host's symlink:", os.readlink("host-link"), "mode", oct(os.stat("host-file").st_mode & 0o777))
print("host's hard link count:", os.stat("host-file").st_nlink, "mtime", int(os.stat("host-file").st_mtime))

# A sparse file past 4 GiB.
with open("sparse", "wb") as f:
    f.truncate(5 << 30)
    f.seek((5 << 30) - 1)
    f.write(b"x")
with open("sparse", "rb") as f:
    f.seek((5 << 30) - 1)
    print("sparse:", os.stat("sparse").st_size, f.read())
