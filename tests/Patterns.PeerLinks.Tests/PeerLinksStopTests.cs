using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>
/// A host stopped gracefully (<see cref="IHost.StopAsync"/>, not disposed) leaves the mesh: after its drain it tells its
/// peers it is leaving, so they mark it down at once and stop routing to it, and a new host on the same node id rejoins.
/// </summary>
public sealed class PeerLinksStopTests
{
    // Long enough for a slow, shared machine; a node that never says goodbye (the defect: it stayed up 60 s and more)
    // fails here rather than at the test's timeout.
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private const string WorkQueue = "tests.stop.work";

    [Fact(Timeout = 180_000)]
    public async Task StoppedHost_TellsPeersItLeaves_RequestsFailFast_AndANewHostOnTheSameNodeRejoins()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort(), Mesh.FreePort() };
        using var client = RequestHost(ports, 0, withHandler: false);
        using var server = RequestHost(ports, 1, withHandler: true);
        using var other = RequestHost(ports, 2, withHandler: false);
        IHost[] hosts = [client, server, other];
        foreach (var host in hosts)
        {
            await host.StartAsync(TestContext.Current.CancellationToken);
        }

        foreach (var host in hosts)
        {
            await host.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound, TestContext.Current.CancellationToken);
        }

        var requests = client.Services.GetRequiredService<IRequestClient>();
        (await requests.SendAsync<Square, Squared>(new Square(7), TestContext.Current.CancellationToken)).Value.Should().Be(49);
        var serverAddress = new Uri($"http://127.0.0.1:{ports[1]}");
        var seenDownByClient = DownSignal(client, serverAddress);
        var seenDownByOther = DownSignal(other, serverAddress);

        await server.StopAsync(TestContext.Current.CancellationToken); // stopped, not disposed

        (await seenDownByClient.WaitAsync(Bound, TestContext.Current.CancellationToken)).Reason.Should().Contain("left");
        (await seenDownByOther.WaitAsync(Bound, TestContext.Current.CancellationToken)).Reason.Should().Contain("left");
        var act = async () => await requests.SendAsync<Square, Squared>(new Square(3), TestContext.Current.CancellationToken);
        (await act.Should().ThrowAsync<TransportUnavailableException>()).Which.Message.Should().Contain("tests.square").And.Contain("left");

        // A new host on the same node id and address rejoins: the peers link to it again and route to its handler.
        using var restarted = RequestHost(ports, 1, withHandler: true);
        await restarted.StartAsync(TestContext.Current.CancellationToken);
        await client.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound, TestContext.Current.CancellationToken);
        await restarted.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound, TestContext.Current.CancellationToken); // the reply's way back
        (await requests.SendAsync<Square, Squared>(new Square(5), TestContext.Current.CancellationToken)).Value.Should().Be(25);

        await restarted.StopAsync(TestContext.Current.CancellationToken);
        await other.StopAsync(TestContext.Current.CancellationToken);
        await client.StopAsync(TestContext.Current.CancellationToken);
    }

    [Fact(Timeout = 180_000)]
    public async Task MessagesSentWhileAConsumerHostStops_AreAllHandled_NoneLost()
    {
        const int Count = 2_000;
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort(), Mesh.FreePort() };
        var handled = new ConcurrentDictionary<int, byte>();
        var handledByStopping = 0;
        var allHandled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stoppingBusy = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask Handle(Work work, bool stoppingNode)
        {
            if (stoppingNode && Interlocked.Increment(ref handledByStopping) == 50)
            {
                stoppingBusy.TrySetResult();
            }

            if (handled.TryAdd(work.Id, 0) && handled.Count == Count)
            {
                allHandled.TrySetResult();
            }

            return ValueTask.CompletedTask;
        }

        using var sender = WorkHost(ports, 0, null);
        using var stopping = WorkHost(ports, 1, w => Handle(w, stoppingNode: true));
        using var staying = WorkHost(ports, 2, w => Handle(w, stoppingNode: false));
        IHost[] hosts = [sender, stopping, staying];
        foreach (var host in hosts)
        {
            await host.StartAsync(TestContext.Current.CancellationToken);
        }

        foreach (var host in hosts)
        {
            await host.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound, TestContext.Current.CancellationToken);
        }

        var stoppingLeft = DownSignal(sender, new Uri($"http://127.0.0.1:{ports[1]}"));
        var queue = sender.Services.GetRequiredService<IQueueSender>();
        var sending = Task.Run(async () =>
        {
            for (var i = 0; i < Count; i++)
            {
                await queue.SendAsync(WorkQueue, new Work(i), TestContext.Current.CancellationToken);
            }
        });

        // The stop begins while messages flow to the stopping node (or, on a slow machine, after the sends: then it only
        // has less to drain); whatever it had in hand is settled or handed back, never lost.
        await Task.WhenAny(stoppingBusy.Task, sending).WaitAsync(Bound, TestContext.Current.CancellationToken);
        await stopping.StopAsync(TestContext.Current.CancellationToken);
        await sending.WaitAsync(Bound, TestContext.Current.CancellationToken);
        await stoppingLeft.WaitAsync(Bound, TestContext.Current.CancellationToken);
        await allHandled.Task.WaitAsync(Bound, TestContext.Current.CancellationToken);

        handled.Keys.Should().BeEquivalentTo(Enumerable.Range(0, Count));
        (await sender.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(WorkQueue, 10, TestContext.Current.CancellationToken)).Should().BeEmpty();
        await staying.StopAsync(TestContext.Current.CancellationToken);
        await sender.StopAsync(TestContext.Current.CancellationToken);
    }

    /// <summary>Completes with the peer at <paramref name="address"/> when <paramref name="host"/> sees it go down.</summary>
    private static Task<PeerInfo> DownSignal(IHost host, Uri address)
    {
        var down = new TaskCompletionSource<PeerInfo>(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Services.GetRequiredService<PeerMembership>().PeerChanged += (_, e) =>
        {
            if (e.Peer.Address == address && e.Peer.State == PeerState.Down)
            {
                down.TrySetResult(e.Peer);
            }
        };
        return down.Task;
    }

    [Fact(Timeout = 60_000)]
    public async Task StoppedNode_DoesNotStartAgain_EvenAfterItHadStarted()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort(), Mesh.FreePort() };
        using var node = RequestHost(ports, 0, withHandler: false);
        await node.StartAsync(TestContext.Current.CancellationToken);
        await node.StopAsync(TestContext.Current.CancellationToken);

        // Only the node's own hosted service: a start after the leave must fail loudly, not run a node cut off its peers.
        var peerLinks = node.Services.GetServices<IHostedService>().Single(s => s.GetType().Name == "PeerLinksHostedService");
        var again = async () => await peerLinks.StartAsync(TestContext.Current.CancellationToken);
        (await again.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("does not start again");
    }

    private static IHost RequestHost(int[] ports, int index, bool withHandler)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.AddPatterns(p => p.UsePeerLinks(o => Mesh.Apply(o, index, ports)));
        builder.AddRequestResponse(r =>
        {
            if (withHandler)
            {
                r.AddHandler<Square, Squared, SquareHandler>();
            }
        });
        return builder.Build();
    }

    private static IHost WorkHost(int[] ports, int index, Func<Work, ValueTask>? handler)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.AddPatterns(p => p.UsePeerLinks(o => Mesh.Apply(o, index, ports)));
        builder.AddMessageQueue(q =>
        {
            q.AddQueue(WorkQueue);
            if (handler is not null)
            {
                q.AddConsumer<Work>(WorkQueue, (w, _, _) => handler(w), c => c.Concurrency = 4);
            }
        });
        return builder.Build();
    }
}

[MessageName("tests.stop.work")]
public sealed record Work(int Id);
