"""The scenarios of the mpage conformance suite (the rows in docs/conformance.md), as
dicts the blkrig plugin writes out as TOML (docs/scenarios.md).

One scenario serves several rows where it can, so a kernel costs twelve boots
(ten without the ext2 module).
Each builder returns a Scenario: the dict, and the scenario index of every
step a test looks at (the run model numbers steps as the scenario does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE = 4096
MNT = "/mnt"

# Queue settings of the two views of the same I/O (docs/conformance.md, "Two views").
VIEWS = {
    # Each bio mpage built reaches the device as one request.
    "nomerges": {"scheduler": "none", "nomerges": 2},
    # The kernel's default for a single-queue virtio disk: mq-deadline, merging on.
    "merging": {"scheduler": "mq-deadline", "nomerges": 0},
}


@dataclass
class Scenario:
    name: str
    doc: dict
    steps: dict[str, int] = field(default_factory=dict)  # label -> scenario step index

    def add(self, label: str | None, **step) -> None:
        if label is not None:
            self.steps[label] = len(self.doc["steps"])
        self.doc["steps"].append(step)


def _new(name: str, description: str, disk: dict, files: list[dict], guest: dict | None = None,
         device: dict | None = None, faults: list[dict] | None = None) -> Scenario:
    doc = {"scenario": {"name": name, "description": description}, "disk": dict(disk, files=files)}
    if device:
        doc["device"] = device
    doc["guest"] = dict(guest or VIEWS["nomerges"])
    if faults:
        doc["faults"] = faults
    doc["steps"] = []
    return Scenario(name, doc)


# ---------------------------------------------------------------- M1, M2, M4 (and M13's baseline)

# frag.bin's second extent starts here: a page multiple that is not a multiple
# of any readahead window (page 261), so the extent gap falls inside a window
# and mpage has to send its bio off in the middle of one readahead call.
FRAG_SPLIT = 1069056
TAIL_SIZE = 103400  # 25 pages + 1000 bytes: the last page holds two 512-byte blocks of data


def read(view: str) -> Scenario:
    """Three cold buffered reads on vfat (512-byte blocks): a contiguous 4 MiB
    file (M1), a file whose size is not a page multiple (M4), a file in two
    extents split inside a readahead window (M2)."""
    s = _new(f"mpage-read-{view}", f"sequential buffered reads through mpage_readahead, {view} view",
             {"fs": "vfat", "size": "64M"},
             [{"path": "/f1.bin", "size": "4M", "content": "random", "seed": 1},
              {"path": "/tail.bin", "size": TAIL_SIZE, "content": "random", "seed": 2},
              {"path": "/frag.bin", "size": "2M", "content": "random", "seed": 3, "layout": "fragmented",
               "extents": 2, "split_at": [FRAG_SPLIT]}],
             guest=VIEWS[view])
    s.add("mount", op="mount")
    s.add(None, op="drop_caches")
    s.add("read_f1", op="read", path=f"{MNT}/f1.bin", bs="4K", expect={"ret": 0, "bytes": "4M", "sha256": "file"})
    s.add("read_tail", op="read", path=f"{MNT}/tail.bin", bs="4K",
          expect={"ret": 0, "bytes": TAIL_SIZE, "sha256": "file"})
    s.add("read_frag", op="read", path=f"{MNT}/frag.bin", bs="4K", expect={"ret": 0, "bytes": "2M", "sha256": "file"})
    s.add(None, op="umount")
    return s


# ---------------------------------------------------------------- M3, M10

C_SPLIT = 2560  # c.bin's second extent starts 2.5 KiB in: page 0 maps to two runs of blocks


def frag512() -> Scenario:
    """FAT16 with 512-byte clusters and a file whose first page spans two
    discontiguous runs of clusters: read it (M3), then rewrite its first pages
    and fsync (M10)."""
    s = _new("mpage-frag512", "a page that does not map to one run of blocks, read and written back",
             {"fs": "vfat", "size": "16M", "fat_bits": 16, "cluster": 512},
             [{"path": "/c.bin", "size": "64K", "content": "random", "seed": 4, "layout": "fragmented",
               "extents": 2, "split_at": [C_SPLIT]}])
    s.add("mount", op="mount")
    s.add(None, op="drop_caches")
    s.add("read", op="read", path=f"{MNT}/c.bin", bs="4K", expect={"ret": 0, "bytes": "64K", "sha256": "file"})
    s.add(None, op="drop_caches")
    s.add("write", op="write", path=f"{MNT}/c.bin", length="16K", create=False, seed=11)
    s.add("fsync", op="fsync", path=f"{MNT}/c.bin")
    s.add(None, op="umount")
    return s


# ---------------------------------------------------------------- M5

SPARSE_HOLES = [[0, 65536], [131072, 2048]]  # whole pages 0-15; the first half of page 32


def sparse() -> Scenario:
    """ext4 with 1 KiB blocks, a sparse file: pages 0-15 wholly holes, page 32
    a hole followed by data (M5). ext4 reads through ext4_mpage_readpages."""
    s = _new("mpage-sparse", "holes: no I/O for hole pages, per-block reads after a hole in a page",
             {"fs": "ext4", "size": "64M", "block": 1024},
             [{"path": "/s.bin", "size": "256K", "content": "random", "seed": 5, "layout": "sparse",
               "holes": SPARSE_HOLES}])
    s.add("mount", op="mount")
    s.add(None, op="drop_caches")
    s.add("read", op="read", path=f"{MNT}/s.bin", bs="4K", expect={"ret": 0, "bytes": "256K", "sha256": "file"})
    s.add(None, op="umount")
    return s


# ---------------------------------------------------------------- M6

EIO_OFFSET = 80 * 1024  # file page 20


def read_eio() -> Scenario:
    """A read error on one page of a 256 KiB vfat file (M6); the rule is
    disarmed as the second drop_caches begins, and the same read then succeeds."""
    s = _new("mpage-read-eio", "a failed read request: retries per page, EIO at the bad page, no sticky poison",
             {"fs": "vfat", "size": "64M"},
             [{"path": "/f.bin", "size": "256K", "content": "random", "seed": 3}])
    s.add("mount", op="mount")
    s.add(None, op="drop_caches")
    s.add("read_eio", op="read", path=f"{MNT}/f.bin", bs="4K",
          expect={"ret": -1, "errno": "EIO", "bytes": EIO_OFFSET})
    s.add("read_after", op="read", path=f"{MNT}/f.bin", offset="96K", length="64K", bs="4K",
          expect={"ret": 0, "bytes": "64K"})
    s.add("drop", op="drop_caches")
    s.add("read_clean", op="read", path=f"{MNT}/f.bin", bs="4K", expect={"ret": 0, "bytes": "256K", "sha256": "file"})
    s.doc["faults"] = [{"rule": "ioerr op=read", "file": "/f.bin", "offset": EIO_OFFSET, "length": PAGE,
                        "until_step": s.steps["drop"]}]
    return s


# ---------------------------------------------------------------- M7

def write_eio() -> Scenario:
    """Writes to the file's sectors fail (M7): fsync reports EIO once per open
    file, to the writer and to a descriptor opened before the failure."""
    s = _new("mpage-write-eio", "a failed writeback: EIO from fsync once per open file",
             {"fs": "vfat", "size": "64M"},
             [{"path": "/f.bin", "size": "64K", "content": "zero"}],
             faults=[{"rule": "ioerr op=write", "file": "/f.bin"}])
    s.add("mount", op="mount")
    s.add("open_early", op="open", path=f"{MNT}/f.bin", fd="early", access="r")
    s.add("open", op="open", path=f"{MNT}/f.bin", fd="f", access="w")
    s.add("write", op="write", fd="f", length="64K", seed=12)
    s.add("fsync1", op="fsync", fd="f", expect={"ret": -1, "errno": "EIO"})
    s.add("fsync2", op="fsync", fd="f", expect={"ret": 0})
    s.add("fsync_early1", op="fsync", fd="early", expect={"ret": -1, "errno": "EIO"})
    s.add("fsync_early2", op="fsync", fd="early", expect={"ret": 0})
    s.add(None, op="close", fd="f")
    s.add(None, op="close", fd="early")
    return s


# ---------------------------------------------------------------- M8, M9, M11

STRADDLE_SIZE = 10000  # i_size inside page 2 and inside the block at 9728


def write() -> Scenario:
    """Overwrite a contiguous 4 MiB file and fsync it (M8, M11 with the
    volatile write cache advertised); fill the page that holds EOF of a
    10000-byte file through mmap, beyond i_size too (M9)."""
    s = _new("mpage-write", "writeback through mpage_writepages; the page straddling i_size",
             {"fs": "vfat", "size": "64M"},
             [{"path": "/big.bin", "size": "4M", "content": "zero"},
              {"path": "/tail.bin", "size": STRADDLE_SIZE, "content": "random", "seed": 7}],
             device={"write_cache": True})
    s.add("mount", op="mount")
    s.add("write", op="write", path=f"{MNT}/big.bin", length="4M", bs="64K", create=False, seed=21)
    s.add("fsync", op="fsync", path=f"{MNT}/big.bin")
    s.add("mmap", op="mmap_write", path=f"{MNT}/tail.bin", offset=8192, length=PAGE, seed=22)
    s.add(None, op="umount")
    return s


# ---------------------------------------------------------------- M12

# The drivers an ext2 image can be read by (guest.ext2_driver), by the read
# path they take: ext4's copy of mpage, or fs/mpage.c through fs/ext2.
EXT2_DRIVERS = {"ext4_mpage_readpages": "ext4", "fs/mpage.c": "ext2"}
EXT2_FILE_BLOCKS = 64  # blocks 0-11 direct, 12-63 through the indirect block


def ext2(driver: str = "ext4", block: int = 1024) -> Scenario:
    """An ext2-format image (no extents): blocks 0-11, the indirect block,
    blocks 12.. in one run on disk (M12), mounted by the given driver
    (guest.ext2_driver). The read has to fetch the indirect block itself:
    nothing before the steps leaves it cached (the rig's extent check runs on
    a mount of its own and the agent then empties the disk's cache with
    BLKFLSBUF, which also clears the per-CPU buffer-head LRU that
    drop_caches cannot; docs/architecture.md, "Before the steps"), and the
    steps' mount reads only the superblock, group descriptors and bitmaps."""
    s = _new(f"mpage-ext2-{driver}-{block // 1024}k", f"BH_Boundary: the indirect block and the data before it ({driver} driver)",
             {"fs": "ext2", "size": "64M", "block": block},
             [{"path": "/i.bin", "size": EXT2_FILE_BLOCKS * block, "content": "random", "seed": 6}],
             guest=dict(VIEWS["nomerges"], ext2_driver=driver))
    s.add("mount", op="mount")
    s.add(None, op="drop_caches")
    s.add("read", op="read", path=f"{MNT}/i.bin", bs="4K",
          expect={"ret": 0, "bytes": EXT2_FILE_BLOCKS * block, "sha256": "file"})
    s.add(None, op="umount")
    return s


# ---------------------------------------------------------------- M13

SEG_MAX = 4
SIZE_MAX = 4096  # the smallest segment size Linux accepts (PAGE_SIZE)


def segmax() -> Scenario:
    """The same 4 MiB read as read("nomerges") on a device that takes at most
    4 segments of 4 KiB per request (M13)."""
    s = _new("mpage-segmax", "bio_add_page refusing pages: seg_max and size_max",
             {"fs": "vfat", "size": "64M"},
             [{"path": "/f1.bin", "size": "4M", "content": "random", "seed": 1}],
             device={"seg_max": SEG_MAX, "size_max": SIZE_MAX})
    s.add("mount", op="mount")
    s.add(None, op="drop_caches")
    s.add("read_f1", op="read", path=f"{MNT}/f1.bin", bs="4K", expect={"ret": 0, "bytes": "4M", "sha256": "file"})
    return s


# ---------------------------------------------------------------- M14

DELAY_OFFSET = 1 << 20


def delay() -> Scenario:
    """The device holds back the completion of the read request that carries
    file offset 1 MiB for 200 ms (two queues offered); readahead has the next
    window in flight meanwhile, so completions come out of submission order
    (M14). The read's bytes must still be the file's."""
    s = _new("mpage-delay", "completions out of order: every byte still right",
             {"fs": "vfat", "size": "64M"},
             [{"path": "/f.bin", "size": "4M", "content": "random", "seed": 8}],
             device={"num_queues": 2},
             faults=[{"rule": "delay=200ms op=read", "file": "/f.bin", "offset": DELAY_OFFSET, "length": PAGE}])
    s.add("mount", op="mount")
    s.add(None, op="drop_caches")
    s.add("read", op="read", path=f"{MNT}/f.bin", bs="4K", expect={"ret": 0, "bytes": "4M", "sha256": "file"})
    return s
