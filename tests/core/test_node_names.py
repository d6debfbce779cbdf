"""Workers' node names: unique on a host by default, as given when given."""

import os

from pipeq.core.messaging import node_name


def test_a_default_node_name_names_the_kind_the_process_and_the_host():
    assert node_name("cuda1") == f"pipeq-cuda1-{os.getpid()}@%h"
    assert node_name("webhooks") == f"pipeq-webhooks-{os.getpid()}@%h"


def test_a_given_node_name_is_kept():
    assert node_name("cpu", "big-cpu@rack4") == "big-cpu@rack4"
