"""The embedded demo world: a seeded synthetic world with known ground truth.

``harvest demo world OUT_DIR`` renders it (see :func:`harvest.demo.world.run_demo_world`);
:func:`harvest.demo.truth.load_truth` reads what it knows about itself.
"""
