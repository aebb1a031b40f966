"""The member list of a group conversation under a creator that adds and removes members as fast as its budget
allows (16 membership changes a second): each change redraws the rows that changed, not the whole list of up to
64 members (0.36 s a change on this machine before, which stopped the window answering)."""

from __future__ import annotations

import pytest

from gui.groups import MemberRow

pytestmark = pytest.mark.gui


def members(n: int) -> list[MemberRow]:
    rows = [MemberRow(f"{i:064x}", f"member {i}", False, i, "offline", i == 1) for i in range(1, n)]
    return [MemberRow(f"{0:064x}", "you", False, None, "", False), *rows]


def test_a_membership_change_redraws_only_the_rows_that_changed(xvfb):
    import customtkinter as ctk

    from gui.widgets.group_members import GroupMembersPanel
    from gui.widgets.style import Fonts

    root = ctk.CTk()
    try:
        panel = GroupMembersPanel(root, Fonts(), on_add=lambda: None, on_remove=lambda _fp: None,
                                  on_leave=lambda: None)
        panel.pack(fill="both", expand=True)
        rows = members(64)
        panel.show(rows, None, None, True)
        root.update()
        before = {fp: (panel.names[fp], panel.remove_buttons.get(fp)) for fp in panel.names}
        gone = rows[5]
        for flood in range(20):                          # removed, added again, removed …
            shown = [r for r in rows if r is not gone] if flood % 2 == 0 else rows
            panel.show(shown, None, None, True)
            root.update()
            assert set(panel.names) == {r.fp for r in shown}
            assert panel.heading.cget("text") == f"Members ({len(shown)})"
            for i, row in enumerate(shown):               # every row in its place, in the list's order
                assert int(panel.names[row.fp].grid_info()["row"]) == i
        still = [r.fp for r in rows if r is not gone]
        assert all(panel.names[fp] is before[fp][0] and panel.remove_buttons.get(fp) is before[fp][1]
                   for fp in still), "members that did not change keep their widgets"

        renamed = [*rows[:3], MemberRow(rows[3].fp, "new name", True, 3, "online", False), *rows[4:]]
        panel.show(renamed, None, None, True)
        root.update()
        assert panel.names[rows[3].fp].cget("text") == "● new name ✔"
        assert panel.names[rows[4].fp] is before[rows[4].fp][0]
        panel.show([replace_state(r, "online · 4 steps done") for r in renamed], "only the creator removes", None,
                   True)
        root.update()
        assert str(panel.remove_buttons[rows[4].fp].cget("state")) == "disabled"
        assert panel.states[rows[4].fp].cget("text") == "online · 4 steps done"
    finally:
        root.destroy()


def replace_state(row: MemberRow, state: str) -> MemberRow:
    from dataclasses import replace
    return replace(row, state=state)
