"""The command-line programs, installed as console commands by `pip install .`:

    infini-train     train.py               infini-generate  scripts/generate.py
    infini-eval      eval.py                infini-passkey   scripts/passkey.py
    infini-getdata   getdata.sh (data_utils.prepare)

The files at the repository root and in scripts/ are thin shims over these modules, so `python train.py`
and the installed command are the same program with the same flags. Not imported by `infiniattention`:
the model library needs none of this (nor data_utils).
"""
