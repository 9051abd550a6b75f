"""The relay hands the engine thread's outputs to the event loop in order, one wake-up per burst."""

import asyncio
import threading

from engine_core.output_relay import OutputRelay


def test_a_burst_from_another_thread_arrives_in_order_with_one_wake_up() -> None:
    event_loop = asyncio.new_event_loop()
    try:
        relay: OutputRelay[int] = OutputRelay(event_loop)
        queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(3)]
        wake_ups = []
        schedule = event_loop.call_soon_threadsafe
        event_loop.call_soon_threadsafe = lambda *args: (wake_ups.append(args), schedule(*args))[1]  # type: ignore[method-assign]
        # While the event loop is busy elsewhere (here: not running), a step's outputs pile up.
        sender = threading.Thread(target=lambda: [relay.send(queues[i % 3], i) for i in range(30)])
        sender.start()
        sender.join()
        event_loop.run_until_complete(asyncio.sleep(0))
        assert len(wake_ups) == 1
        for index, queue in enumerate(queues):
            assert [queue.get_nowait() for _ in range(queue.qsize())] == list(range(index, 30, 3))
        # The next burst schedules a new delivery.
        relay.send(queues[0], 99)
        event_loop.run_until_complete(asyncio.sleep(0))
        assert len(wake_ups) == 2 and queues[0].get_nowait() == 99
    finally:
        event_loop.close()


def test_sending_after_the_event_loop_closed_is_silent() -> None:
    event_loop = asyncio.new_event_loop()
    relay: OutputRelay[int] = OutputRelay(event_loop)
    event_loop.close()
    relay.send(asyncio.Queue(), 1)  # the server shut down: nobody is listening, nothing raises
