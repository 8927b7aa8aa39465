"""The wsi-her2 command line (installed as the ``wsi_her2_cli`` package)."""
