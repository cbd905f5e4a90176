"""SpeechBrain pretrained interfaces of exported runs (:func:`slukd.inference.export_run` copies
``custom_interface.py`` into each export folder, where ``foreign_class`` imports it)."""
