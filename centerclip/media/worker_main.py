"""The main module a decoder worker process is told its parent has (see worker.py,
``_main_is_this_module``): multiprocessing runs the parent's main module again in each child it
starts, and this one does nothing, where a caller's script without a main guard would run again."""
