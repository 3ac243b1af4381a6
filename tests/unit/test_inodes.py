"""The inode table (zosfs/namespace/inodes.py): lookups, forget, detach and
move keep it consistent, parents live exactly as long as they are needed,
and keys follow renames."""

from __future__ import annotations

import stat

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zosfs.namespace.inodes import ROOT_INO, Inode, InodeTable
from zosfs.namespace.metadata import Attrs

DIR = Attrs(stat.S_IFDIR | 0o755, 0, 0, 0, 0)
FILE = Attrs(stat.S_IFREG | 0o644, 0, 0, 0, 0)


def check_consistent(table: InodeTable) -> None:
    """Everything the table promises about itself."""
    root = table.root
    assert table.by_ino[ROOT_INO] is root
    for (parent, name), inode in table.by_name.items():
        assert table.by_ino.get(inode.ino) is inode, "a name points to a dropped inode"
        assert (inode.parent, inode.name) == (parent, name)
        assert not inode.gone
    for inode in table.by_ino.values():
        if inode is root:
            continue
        assert inode.parent in table.by_ino, f"{inode} lost its parent"
        children = sum(1 for c in table.by_ino.values() if c is not root and c.parent == inode.ino)
        assert inode.nchildren == children, f"{inode}: nchildren {inode.nchildren}, really {children}"
        assert inode.lookups or inode.opens or inode.nchildren or inode.writer is not None, f"{inode} leaked"
        if not inode.gone:
            assert table.by_name.get((inode.parent, inode.name)) is inode
    assert root.nchildren == sum(1 for c in table.by_ino.values() if c is not root and c.parent == ROOT_INO)


def looked_up(table: InodeTable, parent: Inode, name: str, attrs: Attrs = FILE) -> Inode:
    inode = table.add(parent, name, attrs)
    inode.lookups += 1
    return inode


@pytest.fixture
def table() -> InodeTable:
    return InodeTable("", DIR)


def test_forget_drops_an_inode(table: InodeTable) -> None:
    f = looked_up(table, table.root, "f")
    f.lookups += 2  # readdirplus and lookups add references
    table.forget(f.ino, 2)
    assert table.get(f.ino) is f
    table.forget(f.ino, 1)
    assert table.get(f.ino) is None
    assert table.child(ROOT_INO, "f") is None
    check_consistent(table)


def test_root_is_never_forgotten(table: InodeTable) -> None:
    table.forget(ROOT_INO, 100)
    assert table.get(ROOT_INO) is table.root
    assert table.key(table.root) == ""


def test_a_parent_lives_while_its_children_do(table: InodeTable) -> None:
    a = looked_up(table, table.root, "a", DIR)
    b = looked_up(table, a, "b", DIR)
    f = looked_up(table, b, "f")
    table.forget(a.ino, 1)
    table.forget(b.ino, 1)
    assert table.key(f) == "a/b/f"
    check_consistent(table)
    table.forget(f.ino, 1)
    assert table.by_ino.keys() == {ROOT_INO}
    assert table.root.nchildren == 0
    check_consistent(table)


def test_detached_inode_keeps_its_key_until_forgotten(table: InodeTable) -> None:
    a = looked_up(table, table.root, "a", DIR)
    f = looked_up(table, a, "f")
    table.forget(a.ino, 1)
    table.detach(f)  # unlinked while the kernel still holds it
    assert f.gone
    assert table.child(a.ino, "f") is None
    assert table.key(f) == "a/f"
    check_consistent(table)
    table.forget(f.ino, 1)
    assert table.by_ino.keys() == {ROOT_INO}
    check_consistent(table)


def test_open_file_outlives_forget(table: InodeTable) -> None:
    f = looked_up(table, table.root, "f")
    f.opens = 1
    table.forget(f.ino, 1)
    assert table.get(f.ino) is f
    f.opens = 0
    table.release(f)
    assert table.get(f.ino) is None
    check_consistent(table)


def test_adding_a_name_again_detaches_the_old_inode(table: InodeTable) -> None:
    old = looked_up(table, table.root, "x")
    new = looked_up(table, table.root, "x", DIR)
    assert old.gone and not new.gone
    assert table.child(ROOT_INO, "x") is new
    check_consistent(table)
    table.forget(old.ino, 1)
    check_consistent(table)


def test_keys_follow_a_file_rename(table: InodeTable) -> None:
    a = looked_up(table, table.root, "a", DIR)
    b = looked_up(table, table.root, "b", DIR)
    f = looked_up(table, a, "f")
    table.forget(a.ino, 1)
    table.move(f, b, "g")
    assert table.key(f) == "b/g"
    assert table.child(b.ino, "g") is f
    assert table.get(a.ino) is None  # nothing holds the old parent any more
    check_consistent(table)


def test_keys_follow_a_directory_rename(table: InodeTable) -> None:
    a = looked_up(table, table.root, "a", DIR)
    b = looked_up(table, a, "b", DIR)
    c = looked_up(table, b, "c")
    z = looked_up(table, table.root, "z", DIR)
    assert table.key(c) == "a/b/c"  # prefixes are remembered: a move must not leave them stale
    table.move(a, z, "y")
    assert table.key(c) == "z/y/b/c"
    assert table.key(b) == "z/y/b/"
    assert table.prefix(a) == "z/y/"
    assert table.is_below(c, z) and table.is_below(c, a) and not table.is_below(z, a)
    assert set(table.below(z)) == {a, b, c}
    check_consistent(table)


def test_rename_over_an_existing_name(table: InodeTable) -> None:
    f = looked_up(table, table.root, "f")
    g = looked_up(table, table.root, "g")
    table.move(f, table.root, "g")
    assert g.gone
    assert table.child(ROOT_INO, "g") is f
    assert table.child(ROOT_INO, "f") is None
    check_consistent(table)
    table.forget(g.ino, 1)
    check_consistent(table)


def test_rename_within_the_same_directory_keeps_the_parent(table: InodeTable) -> None:
    a = looked_up(table, table.root, "a", DIR)
    f = looked_up(table, a, "f")
    table.forget(a.ino, 1)  # only f holds a
    table.move(f, a, "g")
    assert table.get(a.ino) is a
    assert table.key(f) == "a/g"
    check_consistent(table)


def test_prefix_of_a_mount_below_a_prefix() -> None:
    table = InodeTable("sub/dir/", DIR)
    d = looked_up(table, table.root, "d", DIR)
    f = looked_up(table, d, "f")
    assert table.key(table.root) == "sub/dir/"
    assert table.key(f) == "sub/dir/d/f"
    assert table.key(d) == "sub/dir/d/"


class TableModel(RuleBasedStateMachine):
    """Random lookups, forgets, detaches, renames and opens against a model
    of the path of every live inode."""

    def __init__(self) -> None:
        super().__init__()
        self.table = InodeTable("", DIR)
        self.paths: dict[int, str] = {ROOT_INO: ""}  # live (not gone) inodes -> expected key prefix

    def live(self) -> list[Inode]:
        return [self.table.by_ino[i] for i in sorted(self.paths) if i in self.table.by_ino]

    def dirs(self) -> list[Inode]:
        return [i for i in self.live() if i.is_dir]

    @rule(data=st.data(), name=st.sampled_from("abcd"), is_dir=st.booleans())
    def lookup(self, data: st.DataObject, name: str, is_dir: bool) -> None:
        parent = data.draw(st.sampled_from(self.dirs()))
        existing = self.table.child(parent.ino, name)
        if existing is not None and existing.is_dir == is_dir:
            existing.lookups += 1
            return
        if existing is not None:
            self._gone(existing)
        inode = looked_up(self.table, parent, name, DIR if is_dir else FILE)
        self.paths[inode.ino] = self.paths[parent.ino] + name + ("/" if is_dir else "")

    def _gone(self, inode: Inode) -> None:
        gone = self.paths[inode.ino]
        for i, path in list(self.paths.items()):
            if path == gone or gone.endswith("/") and path.startswith(gone):
                # Below a replaced directory: the kernel would have forgotten
                # them; here they simply stop being tracked by path.
                del self.paths[i]

    @precondition(lambda self: len(self.table.by_ino) > 1)
    @rule(data=st.data(), count=st.integers(1, 3))
    def forget(self, data: st.DataObject, count: int) -> None:
        ino = data.draw(st.sampled_from(sorted(i for i in self.table.by_ino if i != ROOT_INO)))
        self.table.forget(ino, count)
        if ino not in self.table.by_ino:
            self.paths.pop(ino, None)

    def movable(self) -> list[Inode]:
        return [i for i in self.live() if i.ino != ROOT_INO]

    @precondition(lambda self: any(not i.nchildren for i in self.movable()))
    @rule(data=st.data())
    def detach(self, data: st.DataObject) -> None:
        inode = data.draw(st.sampled_from([i for i in self.movable() if not i.nchildren]))
        self._gone(inode)
        self.table.detach(inode)

    @precondition(lambda self: self.movable())
    @rule(data=st.data(), name=st.sampled_from("abcdz"))
    def move(self, data: st.DataObject, name: str) -> None:
        inode = data.draw(st.sampled_from(self.movable()))
        targets = [d for d in self.dirs() if d is not inode and not self.table.is_below(d, inode)]
        parent = data.draw(st.sampled_from(targets))
        old = self.table.child(parent.ino, name)
        if old is inode:
            return
        if old is not None:
            if old.nchildren:
                return  # POSIX: only an empty directory can be replaced
            self._gone(old)
        src = self.paths[inode.ino]
        dst = self.paths[parent.ino] + name + ("/" if inode.is_dir else "")
        self.table.move(inode, parent, name)
        for i, path in list(self.paths.items()):
            if path == src or src.endswith("/") and path.startswith(src):
                self.paths[i] = dst + path[len(src):]

    @precondition(lambda self: self.movable())
    @rule(data=st.data())
    def open_and_close(self, data: st.DataObject) -> None:
        inode = data.draw(st.sampled_from(self.movable()))
        inode.opens += 1
        lookups, inode.lookups = inode.lookups, 0
        self.table.forget(inode.ino, 0)
        assert self.table.get(inode.ino) is inode
        inode.lookups = lookups
        inode.opens -= 1
        self.table.release(inode)

    @invariant()
    def consistent(self) -> None:
        check_consistent(self.table)

    @invariant()
    def keys_follow_renames(self) -> None:
        for ino, path in self.paths.items():
            inode = self.table.by_ino.get(ino)
            if inode is not None and ino != ROOT_INO:
                assert self.table.key(inode) == path


TableModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_table_model = TableModel.TestCase
