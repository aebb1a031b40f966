"""The desktop app: a customtkinter window over a Tk-free presenter.

``gui.controller`` holds every piece of state the window shows and turns node events into view-models; it
imports no Tk and is tested directly. ``gui.app`` builds the window from the small widget modules in
``gui.widgets`` and pumps node events into the controller with ``after()``; ``gui.demo`` opens two windows
beside a local ledger network.
"""
