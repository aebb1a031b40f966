"""A test notification server: owns org.freedesktop.Notifications on the session bus and writes every Notify
call it gets as one JSON line to the file named by argv[1]. Run with the system Python (needs python3-gi)."""

import json
import sys

from gi.repository import Gio, GLib

XML = """<node><interface name="org.freedesktop.Notifications">
<method name="Notify"><arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
<arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
<arg type="a{sv}" direction="in"/><arg type="i" direction="in"/><arg type="u" direction="out"/></method>
<method name="GetCapabilities"><arg type="as" direction="out"/></method>
</interface></node>"""
out = sys.argv[1]
count = 0


def call(conn, sender, path, iface, method, params, invocation):
    global count
    if method == "Notify":
        count += 1
        app, _id, _icon, summary, body = params.unpack()[:5]
        with open(out, "a") as fh:
            fh.write(json.dumps({"app": app, "summary": summary, "body": body}) + "\n")
        invocation.return_value(GLib.Variant("(u)", (count,)))
    else:
        invocation.return_value(GLib.Variant("(as)", (["body"],)))


def acquired(conn, name):
    conn.register_object("/org/freedesktop/Notifications", Gio.DBusNodeInfo.new_for_xml(XML).interfaces[0],
                         call, None, None)


def owned(conn, name):
    with open(out, "a") as fh:
        fh.write('{"ready": true}\n')


Gio.bus_own_name(Gio.BusType.SESSION, "org.freedesktop.Notifications", Gio.BusNameOwnerFlags.NONE,
                 acquired, owned, None)
GLib.MainLoop().run()
