using System.Collections.Concurrent;
using System.Diagnostics;
using Grpc.Core;
using Grpc.Net.Client;
using Patterns.Messaging;
using Patterns.PeerLinks.Links;
using Patterns.PeerLinks.Wire;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>Links that break, peers that go away, receivers that stop, and peers that should not be there.</summary>
public sealed class PeerLinksFaultTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private static readonly int Rounds = int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_RACE_ROUNDS"), out var rounds) ? rounds : 20;

    [Fact(Timeout = 180_000)]
    public async Task ConnectionsCutAtTheSocket_UnderLoad_NothingLostOrDuplicated_AndLinkBackQuickly()
    {
        // The sender reaches the receiver through a relay that the test cuts: both TCP connections of the link (control
        // and bulk) are reset mid-stream, as a failing network or a killed middlebox would, not cancelled politely.
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        await using var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports), loggerFactory: Mesh.Logs);
        await using var relay = new PausableProxy(ports[1]);
        await using var sender = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports, (_, o) =>
        {
            o.Peers.Clear();
            o.Peers.Add(new Uri($"http://127.0.0.1:{relay.Port}"));
        }), loggerFactory: Mesh.Logs);
        const int count = 20_000;
        var deliveries = new DeliveryCount(count);
        var queue = $"fault.cut-{Guid.NewGuid():N}";
        await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = 64 }, deliveries.Handle);
        await sender.Membership.WaitForAllUpAsync().WaitAsync(Bound);
        await Mesh.UntilAsync(() => sender.Links[0].HasQueueConsumer(queue), "the receiver's subscription to reach the sender");
        var connectionsBefore = relay.Accepted;

        var sending = Task.Run(async () =>
        {
            for (var i = 0; i < count; i++)
            {
                await sender.SendAsync(queue, Envelope(i));
            }
        });

        var reconnects = new List<TimeSpan>();
        var cutSockets = new List<int>();
        for (var cut = 1; cut <= 5; cut++)
        {
            // Cut the connections at five points of the run, each time once deliveries have moved on.
            await Mesh.UntilAsync(() => deliveries.Handled >= cut * count / 6 || deliveries.All.IsCompleted, $"deliveries to pass {cut * count / 6}");

            // Both waits are registered before the cut: a wait for Up registered only once Connecting was seen could miss
            // an Up raised in between (the link reconnects on its own threads) and then wait for nothing.
            var (down, up) = WaitForStatesAsync(sender, PeerState.Connecting, PeerState.Up);
            var started = Stopwatch.GetTimestamp();
            cutSockets.Add(relay.Cut());
            await down.WaitAsync(Bound);
            await up.WaitAsync(Bound);
            reconnects.Add(Stopwatch.GetElapsedTime(started));
        }

        await sending.WaitAsync(Bound);
        await deliveries.All.WaitAsync(Bound);
        deliveries.ShouldBeExactlyOnce();
        TestContext.Current.TestOutputHelper?.WriteLine($"link back after: {string.Join(", ", reconnects.Select(t => $"{t.TotalMilliseconds:0.0} ms"))}");

        // Each cut reset at least one live connection on both sides (the control connection; the bulk one too once it
        // was dialled), and each reconnect dialled new ones.
        TestContext.Current.TestOutputHelper?.WriteLine($"sockets reset per cut: {string.Join(", ", cutSockets)}");
        cutSockets.Should().HaveCount(5).And.OnlyContain(n => n >= 2, "every cut resets a live connection, both ends");
        (relay.Accepted - connectionsBefore).Should().BeGreaterThanOrEqualTo(5, "every cut is followed by a new connection");
        await Mesh.UntilAsync(() => sender.Links[0].BufferedBytes == 0, "everything sent to be acknowledged");

        // The target is 250 ms (first retry within 50 ms), reported above. Only a reconnect that waited a long back-off fails
        // here: a tight bound would fail whenever CI's two busy cores delay the handshake's threads for a second.
        reconnects.Should().HaveCount(5).And.OnlyContain(t => t < TimeSpan.FromSeconds(10), "the first reconnect attempt comes within 50 ms, not after a long back-off");
    }

    [Fact(Timeout = 180_000)]
    public async Task PeerDown_ItsQueueIsUnavailable_ButNotItsTemporaryQueue_NorAQueueItNoLongerConsumedWhenItCameBack()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        var sender = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports));
        var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports));
        try
        {
            var queue = $"fault.comeback-{Guid.NewGuid():N}";
            var reply = $"fault.reply-{Guid.NewGuid():N}";
            await receiver.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (_, _) => new(Settlement.Ack));
            await receiver.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(reply), ConsumerGroup = reply, Temporary = true }, (_, _) => new(Settlement.Ack));
            await sender.Membership.WaitForAllUpAsync().WaitAsync(Bound);
            await Mesh.UntilAsync(() => sender.Links[0].HasQueueConsumer(queue) && sender.Links[0].HasQueueConsumer(reply), "both consumers to be announced");

            // Down: its queue's consumer is out of reach (it may come back); its temporary queue went with it.
            var down = WaitForStateAsync(sender, PeerState.Down);
            await receiver.DisposeAsync();
            await down.WaitAsync(Bound);
            var toQueue = async () => await sender.SendAsync(queue, Envelope(1));
            await toQueue.Should().ThrowAsync<TransportUnavailableException>();
            var toReply = async () => await sender.SendAsync(reply, Envelope(2));
            await toReply.Should().ThrowAsync<QueueNotFoundException>("a temporary queue is never waited for");

            // Back without the consumer, then down again: the queue is no longer one it consumed since its link came up.
            receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports));
            await sender.Membership.WaitForAllUpAsync().WaitAsync(Bound);
            await toQueue.Should().ThrowAsync<QueueNotFoundException>("the peer is up and does not consume it");
            down = WaitForStateAsync(sender, PeerState.Down);
            await receiver.DisposeAsync();
            await down.WaitAsync(Bound);
            await toQueue.Should().ThrowAsync<QueueNotFoundException>("the peer came back without the consumer");
        }
        finally
        {
            await sender.DisposeAsync();
            await receiver.DisposeAsync();
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task PeerStoppedAndRestarted_SendsFailFastThenRecover()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        var sender = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports));
        var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports));
        try
        {
            var queue = $"fault.restart-{Guid.NewGuid():N}";
            var got = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
            var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await receiver.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, async (e, _) =>
            {
                got.TrySetResult(e);
                await release.Task;
                return Settlement.Ack;
            });
            await sender.Membership.WaitForAllUpAsync().WaitAsync(Bound);
            var first = Envelope(1);
            await sender.SendAsync(queue, first);
            (await got.Task.WaitAsync(Bound)).MessageId.Should().Be(first.MessageId);

            // The node stops while its handler still runs. A graceful stop first withdraws the subscription (the sender
            // stops counting it), lets the handler finish and its settlement reach the sender, and only then closes the
            // links. (A stop that closed the links first withdrew the consumer only when the peer went down, the
            // settlement of the handler released then was lost, and the sender delivered the handled message again
            // after the restart: the check on the third message below failed.)
            var down = WaitForStateAsync(sender, PeerState.Down);
            var stopping = receiver.DisposeAsync().AsTask();
            await Mesh.UntilAsync(() => !sender.Links[0].HasQueueConsumer(queue), "the stopping node's consumer to be withdrawn");
            release.SetResult();
            await stopping.WaitAsync(Bound);
            await down.WaitAsync(Bound);

            var act = async () => await sender.SendAsync(queue, Envelope(2));
            (await act.Should().ThrowAsync<TransportUnavailableException>()).Which.Message.Should().Contain(queue).And.Contain("no consumer").And.Contain("cannot be reached");

            receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports));
            var again = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
            await receiver.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (e, _) => { again.TrySetResult(e); return new(Settlement.Ack); });
            await sender.Membership.WaitForAllUpAsync().WaitAsync(Bound);

            // The link is up before the restarted node's subscription announcement has arrived: until it has, a send
            // still fails fast with "no consumer". Recovery means the sends succeed once it has, within the bound.
            var third = Envelope(3);
            using var deadline = new CancellationTokenSource(Bound);
            while (true)
            {
                try
                {
                    await sender.SendAsync(queue, third);
                    break;
                }
                catch (QueueNotFoundException) when (!deadline.IsCancellationRequested)
                {
                    await Task.Yield();
                }
            }

            (await again.Task.WaitAsync(Bound)).MessageId.Should().Be(third.MessageId, "the message handled before the stop was settled, so it is not delivered again");
        }
        finally
        {
            await sender.DisposeAsync();
            await receiver.DisposeAsync();
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task SubscribedWhileTheLinkComesUp_TheSenderKnowsEveryConsumer()
    {
        // Subscriptions are announced while the sender's link is being accepted: the hello acknowledgement carries the
        // subscriptions of that moment and announcements follow at once. The sender used to apply the two concurrently,
        // and now and then the older snapshot was applied last and removed a consumer the announcement had added: a send
        // then failed with "no consumer" although the subscription was confirmed and the link up (the flaky restart
        // test's failure after about a second, when its subscription raced the restarted link).
        for (var round = 0; round < Rounds; round++)
        {
            var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
            await using var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports));
            var handled = new ConcurrentDictionary<string, int>();
            List<string> queues = [];
            async Task SubscribeAsync()
            {
                var queue = $"fault.race-{round}-{queues.Count}-{Guid.NewGuid():N}";
                await receiver.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (e, _) => { handled.AddOrUpdate(queue, 1, (_, n) => n + 1); return new(Settlement.Ack); });
                queues.Add(queue);
            }

            await using var sender = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports));
            while (sender.Membership.Peers.Any(p => p.State != PeerState.Up) && queues.Count < 100)
            {
                await SubscribeAsync();
                await Task.Yield();
            }

            for (var i = 0; i < 5; i++)
            {
                await SubscribeAsync();
            }

            await sender.Membership.WaitForAllUpAsync().WaitAsync(Bound);
            foreach (var queue in queues)
            {
                var send = async () => await sender.SendAsync(queue, Envelope(round));
                await send.Should().NotThrowAsync($"the subscription to {queue} was confirmed and the link is up (round {round})");
            }

            await Mesh.UntilAsync(() => handled.Count == queues.Count, $"{queues.Count} deliveries");
            handled.Values.Should().OnlyContain(n => n == 1);
        }
    }

    [Fact(Timeout = 180_000)]
    public async Task ReceiverStopsHandling_SenderWaitsWithBoundedMemory_ThenEverythingArrives()
    {
        await using var mesh = await Mesh.StartAsync(2);
        var (sender, receiver) = (mesh.Nodes[0], mesh.Nodes[1]);
        var queue = $"fault.stall-{Guid.NewGuid():N}";
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = 0;
        const int count = 400;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        // Declared first: the sender's own declaration bounds the queue. (Declared after the subscription, the queue
        // already existed with the subscription's default capacity of 1024, all 400 fitted, and whether the sender
        // was still sending when checked was a race.)
        await sender.DeclareQueueAsync(queue, new QueueSettings { Capacity = 100 });
        await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue, Concurrency = 64 },
            async (e, _) =>
            {
                await gate.Task;
                if (Interlocked.Increment(ref handled) == count)
                {
                    done.TrySetResult();
                }

                return Settlement.Ack;
            });

        // 64 KiB messages: 64 fill the 4 MiB window, at most the credit (64 + 64 prefetch) are in flight, the queue
        // holds about 100 more (at least one per credit slot); well before 400 the sender must wait.
        var sent = 0;
        var sending = Task.Run(async () =>
        {
            for (var i = 0; i < count; i++)
            {
                await sender.SendAsync(queue, Envelope(i, 64 * 1024));
                Interlocked.Increment(ref sent);
            }
        });
        var link = sender.Links[0];
        await Mesh.UntilAsync(() => Volatile.Read(ref sent) >= 100, "100 sends");

        sending.IsCompleted.Should().BeFalse("a receiver that handles nothing makes the sender wait");
        link.BufferedBytes.Should().BeLessThanOrEqualTo(sender.Links[0].ReplayCapacity + (64 * 1024) + 1024, "the link holds at most its window");
        Volatile.Read(ref sent).Should().BeLessThan(count);

        gate.SetResult();
        await sending.WaitAsync(Bound);
        await done.Task.WaitAsync(Bound);
        handled.Should().Be(count);
    }

    [Fact(Timeout = 120_000)]
    public async Task ReceiverStopsReading_SenderHoldsAtMostItsWindow_ThenEverythingArrivesOnce()
    {
        const int window = 1024 * 1024;
        const int size = 16 * 1024;
        const int count = 1_000; // 16 MB in all: sixteen windows
        await using var relayed = await RelayedPair.StartAsync(window, count); // a queue of capacity 100: SendAsync itself must wait
        var (receiver, proxy, sender, queue, deliveries) = (relayed.Receiver, relayed.Proxy, relayed.Sender, relayed.Queue, relayed.Deliveries);
        var link = sender.Links[0];
        const int first = 120;
        var sent = 0;
        for (; sent < first; sent++)
        {
            await sender.SendAsync(queue, Envelope(sent, size)).AsTask().WaitAsync(Bound);
        }

        await Mesh.UntilAsync(() => deliveries.Handled >= 100, "100 deliveries before the receiver stops reading");

        // The rest (over fourteen windows) is sent only once the relay is paused: sent all at once before, it could all
        // have crossed by then (a slow test thread, a fast link), and the window would never fill.
        proxy.Pause();
        var pausedAt = deliveries.Handled;
        var relayedAtPause = proxy.Forwarded;
        var sending = Task.Run(async () =>
        {
            for (var i = first; i < count; i++)
            {
                await sender.SendAsync(queue, Envelope(i, size));
                Interlocked.Increment(ref sent);
            }
        });
        // Nothing read means nothing acknowledged: the sender fills its window, then waits.
        await Mesh.UntilAsync(() => link.BufferedBytes >= window - size, "the sender's window to fill");
        var stalled = Stopwatch.StartNew();
        var relayedWhilePaused = proxy.Forwarded - relayedAtPause;
        relayedWhilePaused.Should().BeLessThanOrEqualTo(2 * 16 * 1024, "the relay reads at most the one buffer each connection was reading when paused");
        sending.IsCompleted.Should().BeFalse("a receiver that reads nothing makes the sender wait");
        proxy.Accepted.Should().Be(2, "the link kept its two connections: no reconnect went around the pause");
        Volatile.Read(ref sent).Should().BeLessThan(count);

        proxy.Resume();
        await sending.WaitAsync(Bound);
        await deliveries.All.WaitAsync(Bound);
        var recovered = stalled.Elapsed;

        deliveries.ShouldBeExactlyOnce();
        link.PeakBufferedBytes.Should().BeLessThanOrEqualTo(window + size + 1024, "the link never holds more than its window and one message");
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"paused after {pausedAt} deliveries; peak buffered {link.PeakBufferedBytes} bytes of a {window}-byte window; " +
            $"{relayedWhilePaused} bytes relayed while paused; the remaining {count - pausedAt} messages arrived {recovered.TotalMilliseconds:0} ms after resuming");
    }

    [Fact(Timeout = 180_000)]
    public async Task BulkConnectionStalled_WithAFullWindowQueued_ControlFramesStillCrossBothWays()
    {
        const int window = 1024 * 1024;
        const int size = 16 * 1024;
        const int count = 400; // six windows
        await using var relayed = await RelayedPair.StartAsync(window, count); // a queue of capacity 100: SendAsync itself must wait
        var (receiver, proxy, sender, queue, deliveries) = (relayed.Receiver, relayed.Proxy, relayed.Sender, relayed.Queue, relayed.Deliveries);
        var link = sender.Links[0];

        // The sender's link dials the control connection first and the bulk connection once the hello is answered; the
        // receiver's own link to the sender does not go through the relay.
        await Mesh.UntilAsync(() => proxy.Accepted >= 2, "the link's bulk connection");
        proxy.Accepted.Should().Be(2, "the link's control and bulk streams run on two connections");
        const int control = 1;
        const int bulk = 2;
        const int first = 60;
        for (var i = 0; i < first; i++)
        {
            await sender.SendAsync(queue, Envelope(i, size)).AsTask().WaitAsync(Bound);
        }

        await Mesh.UntilAsync(() => deliveries.Handled >= 50, "50 deliveries before the bulk connection stalls");

        // The relay parks at its next read on the bulk connection. The rest of the messages (over five windows) are sent
        // only now, so that read comes: sent all at once before the pause, they could all have crossed by then (a slow
        // test thread, a fast link), and the relay would wait in a read no byte ever ends.
        var parked = proxy.Pause(bulk);
        var sending = Task.Run(async () =>
        {
            for (var i = first; i < count; i++)
            {
                await sender.SendAsync(queue, Envelope(i, size));
            }
        });
        await parked.WaitAsync(Bound);
        await Mesh.UntilAsync(() => link.BufferedBytes >= window - size, "the sender's window to fill behind the stalled bulk connection");
        var bulkBytes = proxy.ForwardedOn(bulk);
        var controlBytes = proxy.ForwardedOn(control);
        var queuedAhead = link.BufferedBytes / size;

        // A ping and its pong (sender to receiver and back), and a subscription announced by the receiver and applied by
        // the sender (receiver to sender, acknowledged back): all on the control stream, behind a full window of data.
        var roundTrip = await link.ProbeControlAsync().WaitAsync(Bound);
        var other = $"fault.stalled-other-{Guid.NewGuid():N}";
        await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(other), ConsumerGroup = other }, static (_, _) => new(Settlement.Ack)).AsTask().WaitAsync(Bound);

        // The subscription waits for the sender's confirmation only up to the announce timeout (10 s), which a loaded
        // machine can pass: the bounded wait below, not the subscription's return, says the announcement was applied.
        await Mesh.UntilAsync(() => link.HasQueueConsumer(other), "the announcement to cross the control stream and be applied");

        proxy.ForwardedOn(bulk).Should().Be(bulkBytes, "no data moved: the control frames needed none of the queued messages to drain first");
        proxy.ForwardedOn(control).Should().BeGreaterThan(controlBytes, "the ping and the announcement's acknowledgement crossed the control connection");
        link.BufferedBytes.Should().BeGreaterThanOrEqualTo(window - size, "the data is still queued behind the stall");
        sending.IsCompleted.Should().BeFalse("the sender still waits for its window");
        proxy.Accepted.Should().Be(2, "the link kept its two connections: no reconnect went around the stall");
        queuedAhead.Should().BeGreaterThanOrEqualTo(60, "a full 1 MiB window of 16 KiB messages was queued ahead of the control frames");

        proxy.Resume();
        await sending.WaitAsync(Bound);
        await deliveries.All.WaitAsync(Bound);
        deliveries.ShouldBeExactlyOnce();
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"control round trip {roundTrip.TotalMilliseconds:0.0} ms with {queuedAhead} data messages ({link.PeakBufferedBytes} bytes) queued unacknowledged behind the stalled bulk connection");
    }

    [Fact(Timeout = 180_000)]
    public async Task ConnectionsCut_TheLinkDialsBothConnectionsAgain_AndControlStillCrossesWhileTheNewBulkOneIsStalled()
    {
        const int window = 1024 * 1024;
        const int size = 16 * 1024;
        const int count = 400;
        await using var relayed = await RelayedPair.StartAsync(window, count);
        var (receiver, proxy, sender, queue, deliveries) = (relayed.Receiver, relayed.Proxy, relayed.Sender, relayed.Queue, relayed.Deliveries);
        var link = sender.Links[0];
        // The relay counts a connection before it registers its sockets; bytes forwarded on the second one (its HTTP/2
        // preface) mean both are registered and will be reset by the cut.
        await Mesh.UntilAsync(() => proxy.ForwardedOn(2) > 0, "the link's first two connections");
        proxy.Accepted.Should().Be(2);

        // Reset both connections at the socket. Both waits are registered before the cut (the link reconnects on its own
        // threads). A reset socket's relay closes its partner too, so the cut may find some already closed.
        var (down, up) = WaitForStatesAsync(sender, PeerState.Connecting, PeerState.Up);
        proxy.Cut().Should().BeGreaterThanOrEqualTo(2, "the cut reset live connections");
        await down.WaitAsync(Bound);
        await up.WaitAsync(Bound);

        // The link dials its control connection again (the third the relay accepts) and, once the hello is answered, its
        // bulk connection (the fourth): the two streams do not end up sharing one connection after a reconnect.
        await Mesh.UntilAsync(() => proxy.Accepted >= 4, "the link's new bulk connection");
        proxy.Accepted.Should().Be(4, "the reconnect dialled exactly one new control and one new bulk connection");
        const int control = 3;
        const int bulk = 4;
        const int first = 60;
        for (var i = 0; i < first; i++)
        {
            await sender.SendAsync(queue, Envelope(i, size)).AsTask().WaitAsync(Bound);
        }

        await Mesh.UntilAsync(() => deliveries.Handled >= 50, "50 deliveries over the new connections");

        // The new bulk connection stops moving: control frames still cross on the new control connection, both ways. The
        // relay parks at its next read, which the rest of the messages (over five windows) make sure comes.
        var parked = proxy.Pause(bulk);
        var sending = Task.Run(async () =>
        {
            for (var i = first; i < count; i++)
            {
                await sender.SendAsync(queue, Envelope(i, size));
            }
        });
        await parked.WaitAsync(Bound);
        await Mesh.UntilAsync(() => link.BufferedBytes >= window - size, "the sender's window to fill behind the stalled bulk connection");
        var bulkBytes = proxy.ForwardedOn(bulk);
        var controlBytes = proxy.ForwardedOn(control);
        await link.ProbeControlAsync().WaitAsync(Bound);
        var other = $"fault.cut-stalled-other-{Guid.NewGuid():N}";
        await receiver.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(other), ConsumerGroup = other }, static (_, _) => new(Settlement.Ack)).AsTask().WaitAsync(Bound);
        await Mesh.UntilAsync(() => link.HasQueueConsumer(other), "the announcement to cross the new control connection and be applied");
        proxy.ForwardedOn(bulk).Should().Be(bulkBytes, "no data moved on the stalled bulk connection");
        proxy.ForwardedOn(control).Should().BeGreaterThan(controlBytes, "the ping and the announcement's acknowledgement crossed the new control connection");
        sending.IsCompleted.Should().BeFalse("the sender still waits for its window");
        proxy.Accepted.Should().Be(4, "no reconnect went around the stall");

        proxy.Resume();
        await sending.WaitAsync(Bound);
        await deliveries.All.WaitAsync(Bound);
        deliveries.ShouldBeExactlyOnce();
    }

    [Fact(Timeout = 180_000)]
    public async Task UnauthenticatedPeer_IsRefusedAndLogged_AndNeverReachesConsumers()
    {
        var logs = new ListLogs();
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [ports[0]]), loggerFactory: logs.Factory);
        var handled = 0;
        var queue = $"fault.auth-{Guid.NewGuid():N}";
        await node.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (e, _) => { Interlocked.Increment(ref handled); return new(Settlement.Ack); });
        var intruderOptions = Mesh.Options(1, ports, (_, o) => o.SharedSecret = "wrong-secret");
        await using var intruder = await PeerLinksTransport.StartAsync(intruderOptions);

        var down = await WaitForStateAsync(intruder, PeerState.Down).WaitAsync(Bound);

        down.Reason.Should().Contain("refused").And.Contain("wrong shared-secret proof");
        (await logs.WaitForAsync("Refused a control link", Bound)).Should().Contain("node-1");
        var send = async () => await intruder.SendAsync(queue, Envelope(1));
        await send.Should().ThrowAsync<QueueNotFoundException>();
        handled.Should().Be(0);
    }

    [Fact(Timeout = 180_000)]
    public async Task MalformedAndOversizeFrames_CloseOnlyThatLink()
    {
        var logs = new ListLogs();
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        await using var target = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports), loggerFactory: logs.Factory);
        await using var peer = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports));
        await peer.Membership.WaitForAllUpAsync().WaitAsync(Bound);
        var queue = $"fault.malformed-{Guid.NewGuid():N}";
        var handled = new ConcurrentQueue<int>();
        await target.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (e, _) => { handled.Enqueue(BitConverter.ToInt32(e.Payload.Span)); return new(Settlement.Ack); });
        await peer.SendAsync(queue, Envelope(1));

        using var channel = GrpcChannel.ForAddress(target.ListenUri!);
        var security = new LinkSecurity(Mesh.Options(0, ports));
        var session = Guid.NewGuid();
        var garbage = await RawCallAsync(channel, security.Headers("rogue", session), [(byte)FrameType.Hello, 200, 0, 0, 0, 1, 2, 3]);
        var oversize = await RawCallAsync(channel, security.Headers("rogue", session), new byte[FrameBatch.MaxBytes + 1]);

        garbage.StatusCode.Should().Be(StatusCode.InvalidArgument);
        garbage.Status.Detail.Should().Contain("Malformed frame");
        oversize.StatusCode.Should().Be(StatusCode.ResourceExhausted);
        (await logs.WaitForAsync("malformed frame", Bound)).Should().Contain("rogue");
        await peer.SendAsync(queue, Envelope(2));
        await Mesh.UntilAsync(() => handled.Count >= 2, "the second message");

        handled.Should().Equal(1, 2);
        peer.Membership.Peers.Single().State.Should().Be(PeerState.Up, "the well-behaved link is unaffected");
    }

    private static async Task<RpcException> RawCallAsync(GrpcChannel channel, Metadata headers, byte[] bytes)
    {
        using var call = channel.CreateCallInvoker().AsyncDuplexStreamingCall(LinkService.Control, null, new CallOptions(headers));
        var batch = FrameBatch.Rent();
        try
        {
            if (bytes.Length > batch.Buffer.Length)
            {
                batch.Return();
                batch = FrameBatchFor(bytes);
            }
            else
            {
                bytes.CopyTo(batch.Buffer, 0);
                batch.Length = bytes.Length;
            }

            try
            {
                await call.RequestStream.WriteAsync(batch);
            }
            catch (RpcException)
            {
                // The server may reset the stream while the client still writes; its status comes with the response.
            }

            try
            {
                await call.ResponseStream.MoveNext(CancellationToken.None).WaitAsync(Bound);
            }
            catch (RpcException ex)
            {
                return ex;
            }
        }
        finally
        {
            batch.Return();
        }

        throw new InvalidOperationException("The call was not refused.");
    }

    private static FrameBatch FrameBatchFor(byte[] bytes) => FrameBatch.Wrap(bytes);

    private static Envelope Envelope(int sequence, int size = 4)
    {
        var payload = new byte[size];
        BitConverter.TryWriteBytes(payload, sequence);
        return new Envelope { MessageId = Guid.NewGuid(), MessageType = "fault.message", Payload = payload };
    }

    private static Task<PeerInfo> WaitForStateAsync(PeerLinksTransport node, PeerState state)
    {
        var reached = new TaskCompletionSource<PeerInfo>(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnChanged(object? sender, PeerChangedEventArgs e)
        {
            if (e.Peer.State == state)
            {
                node.Membership.PeerChanged -= OnChanged;
                reached.TrySetResult(e.Peer);
            }
        }

        node.Membership.PeerChanged += OnChanged;
        return reached.Task;
    }

    /// <summary>
    /// The peer's first change to <paramref name="first"/>, and its first change to <paramref name="then"/> after that; one
    /// handler registered at once, before the change that causes them.
    /// </summary>
    private static (Task<PeerInfo> First, Task<PeerInfo> Then) WaitForStatesAsync(PeerLinksTransport node, PeerState first, PeerState then)
    {
        var reachedFirst = new TaskCompletionSource<PeerInfo>(TaskCreationOptions.RunContinuationsAsynchronously);
        var reachedThen = new TaskCompletionSource<PeerInfo>(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new Lock();
        void OnChanged(object? sender, PeerChangedEventArgs e)
        {
            lock (gate)
            {
                if (!reachedFirst.Task.IsCompleted)
                {
                    if (e.Peer.State == first)
                    {
                        reachedFirst.TrySetResult(e.Peer);
                    }
                }
                else if (e.Peer.State == then)
                {
                    node.Membership.PeerChanged -= OnChanged;
                    reachedThen.TrySetResult(e.Peer);
                }
            }
        }

        node.Membership.PeerChanged += OnChanged;
        return (reachedFirst.Task, reachedThen.Task);
    }

    /// <summary>Counts deliveries by message id, and completes once the expected number have been handled.</summary>
    /// <summary>A sender whose one link to the receiver goes through a <see cref="PausableProxy"/>, with a window of the given bytes.</summary>
    private sealed class RelayedPair : IAsyncDisposable
    {
        private static readonly TimeSpan NoHeartbeatTimeout = TimeSpan.FromHours(1);

        public PeerLinksTransport Receiver { get; private init; } = null!;

        public PausableProxy Proxy { get; private init; } = null!;

        public PeerLinksTransport Sender { get; private init; } = null!;

        public string Queue { get; } = $"fault.relayed-{Guid.NewGuid():N}";

        public DeliveryCount Deliveries { get; private init; } = null!;

        /// <summary>Starts both nodes, declares <see cref="Queue"/> (capacity 100) on the sender and subscribes the receiver to it (concurrency 64).</summary>
        public static async Task<RelayedPair> StartAsync(int window, int count)
        {
            var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
            // The tests stall a connection (or the whole relay) and check that the sender then waits; a heartbeat timeout
            // on a loaded machine would close the link, reconnect around the stall and release the window, so heartbeats
            // (tested elsewhere) never time out here.
            var receiver = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports, (_, o) => o.HeartbeatTimeout = NoHeartbeatTimeout));
            var proxy = new PausableProxy(ports[1]);
            var sender = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports, (_, o) =>
            {
                o.HeartbeatTimeout = NoHeartbeatTimeout;
                o.ReplayBufferBytes = window;
                o.Peers.Clear();
                o.Peers.Add(new Uri($"http://127.0.0.1:{proxy.Port}"));
            }));
            var pair = new RelayedPair { Receiver = receiver, Proxy = proxy, Sender = sender, Deliveries = new DeliveryCount(count) };
            await sender.DeclareQueueAsync(pair.Queue, new QueueSettings { Capacity = 100 });
            await receiver.SubscribeAsync(
                new SubscriptionRequest { Address = TransportAddress.Queue(pair.Queue), ConsumerGroup = pair.Queue, Concurrency = 64 }, pair.Deliveries.Handle);
            await sender.Membership.WaitForAllUpAsync().WaitAsync(Bound);
            await Mesh.UntilAsync(() => sender.Links[0].HasQueueConsumer(pair.Queue), "the receiver's subscription to reach the sender");
            return pair;
        }

        public async ValueTask DisposeAsync()
        {
            await Sender.DisposeAsync();
            await Proxy.DisposeAsync();
            await Receiver.DisposeAsync();
        }
    }

    private sealed class DeliveryCount(int count)
    {
        private readonly ConcurrentDictionary<Guid, int> _seen = new();
        private readonly TaskCompletionSource _all = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _handled;

        public int Handled => Volatile.Read(ref _handled);

        public Task All => _all.Task;

        public ValueTask<Settlement> Handle(Envelope envelope, CancellationToken cancellationToken)
        {
            _seen.AddOrUpdate(envelope.MessageId, 1, (_, n) => n + 1);
            if (Interlocked.Increment(ref _handled) == count)
            {
                _all.TrySetResult();
            }

            return new(Settlement.Ack);
        }

        public void ShouldBeExactlyOnce()
        {
            _seen.Should().HaveCount(count, "no message is lost");
            _seen.Values.Should().OnlyContain(n => n == 1, "no message is handled twice");
        }
    }
}
