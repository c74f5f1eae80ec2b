using System.Diagnostics;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>A peer in a separate process, killed (SIGKILL) and started again.</summary>
public sealed class PeerLinksProcessTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 180_000)]
    public async Task PeerProcessKilled_RequestsFailFast_ThenRecoverWhenItRestarts()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports));
        var replies = $"replies-{Guid.NewGuid():N}";
        var answers = new System.Collections.Concurrent.ConcurrentDictionary<Guid, TaskCompletionSource<Envelope>>();
        await node.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(replies), ConsumerGroup = replies, Temporary = true },
            (e, _) =>
            {
                if (e.CorrelationId is { } id && answers.TryRemove(id, out var answer))
                {
                    answer.TrySetResult(e);
                }

                return new(Settlement.Ack);
            });

        async Task<Envelope> RequestAsync(int n)
        {
            var request = new Envelope { MessageId = Guid.NewGuid(), MessageType = "echo", Payload = BitConverter.GetBytes(n), ReplyTo = replies };
            var answer = answers.GetOrAdd(request.MessageId, _ => new(TaskCreationOptions.RunContinuationsAsynchronously));
            await node.SendAsync("echo", request);
            return await answer.Task.WaitAsync(Bound);
        }

        using (var peer = NodeProcess.Start("node-1", ports[1], ports[0]))
        {
            await peer.WaitForReadyAsync(Bound);
            await node.Membership.WaitForAllUpAsync().WaitAsync(Bound);
            (await RequestAsync(1)).TryGetHeader("node", out var from).Should().BeTrue();
            from.Should().Be("node-1");

            peer.Kill();
            await Mesh.UntilAsync(() => node.Membership.Peers.Single().State == PeerState.Down, "the killed peer to be down");
        }

        var failing = Stopwatch.StartNew();
        var act = async () => await RequestAsync(2);
        (await act.Should().ThrowAsync<TransportUnavailableException>()).Which.Message.Should().Contain("echo").And.Contain("Down");
        // "At once" against the 60 s the request would otherwise wait (Bound); a busy machine gets a third of that.
        failing.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(20), "a request to a handler no running node hosts fails at once, not at its timeout");

        using var restarted = NodeProcess.Start("node-1", ports[1], ports[0]);
        await restarted.WaitForReadyAsync(Bound);
        await node.Membership.WaitForAllUpAsync().WaitAsync(Bound);
        var reply = await RequestAsync(3);
        BitConverter.ToInt32(reply.Payload.Span).Should().Be(3);
        restarted.Kill();
    }

    [Fact(Timeout = 180_000)]
    public async Task SeparateProcesses_RequestReply_PublishSubscribe_AndAQueue_CrossTheLink_ThenSurviveAKill()
    {
        // The conformance suite's handlers are closures of the test process, so it cannot run unchanged with a node in
        // another process; these are its main cases with the second node as a process of its own (sharing no thread
        // pool, garbage collector or memory with this one).
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, ports));
        var replies = $"replies-{Guid.NewGuid():N}";
        var answered = new System.Collections.Concurrent.ConcurrentDictionary<(string Kind, Guid Id), int>();
        await node.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(replies), ConsumerGroup = replies, Temporary = true },
            (e, _) =>
            {
                if (e.CorrelationId is { } id && e.TryGetHeader("kind", out var kind) && e.TryGetHeader("node", out var from) && from == "node-1")
                {
                    answered.AddOrUpdate((kind!, id), 1, (_, n) => n + 1);
                }

                return new(Settlement.Ack);
            });
        var localNews = new System.Collections.Concurrent.ConcurrentDictionary<Guid, int>();
        await node.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Topic("news"), ConsumerGroup = "local-news" },
            (e, _) => { localNews.AddOrUpdate(e.MessageId, 1, (_, n) => n + 1); return new(Settlement.Ack); });
        var localWork = new System.Collections.Concurrent.ConcurrentDictionary<Guid, int>();
        await node.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue("work"), ConsumerGroup = "work", Concurrency = 2 },
            (e, _) => { localWork.AddOrUpdate(e.MessageId, 1, (_, n) => n + 1); return new(Settlement.Ack); });
        int Answered(string kind) => answered.Keys.Count(k => k.Kind == kind);
        Envelope Message(string type, int n) => new() { MessageId = Guid.NewGuid(), MessageType = type, Payload = BitConverter.GetBytes(n), ReplyTo = replies };

        using (var peer = NodeProcess.Start("node-1", ports[1], ports[0]))
        {
            await peer.WaitForReadyAsync(Bound);
            await node.Membership.WaitForAllUpAsync().WaitAsync(Bound);
            await Mesh.UntilAsync(() => node.Links[0].HasQueueConsumer("work") && node.Links[0].HasQueueConsumer("echo"), "the node process's consumers to be known here");

            // Request-response: the request is handled in the other process and its reply comes back.
            var request = Message("echo", 7);
            await node.SendAsync("echo", request);
            await Mesh.UntilAsync(() => answered.ContainsKey(("echo", request.MessageId)), "the reply from the node process");

            // Publish-subscribe: every message reaches each consumer group once, one here and one in the other process.
            var published = Enumerable.Range(0, 20).Select(i => Message("news", i)).ToList();
            foreach (var message in published)
            {
                await node.PublishAsync("news", message);
            }

            await Mesh.UntilAsync(() => localNews.Count == published.Count && Answered("news") == published.Count, "both consumer groups to have every publish");
            localNews.Keys.Should().BeEquivalentTo(published.Select(m => m.MessageId));
            localNews.Values.Should().OnlyContain(n => n == 1, "the local group gets each publish once");

            // A queue with a consumer in each process: every message is handled by exactly one of them.
            var work = Enumerable.Range(0, 100).Select(i => Message("work", i)).ToList();
            foreach (var message in work)
            {
                await node.SendAsync("work", message);
            }

            await Mesh.UntilAsync(() => localWork.Count + Answered("work") >= work.Count, "every queued message to be handled");
            var handledThere = answered.Keys.Where(k => k.Kind == "work").Select(k => k.Id).ToList();
            localWork.Keys.Concat(handledThere).Should().BeEquivalentTo(work.Select(m => m.MessageId), "each queued message is handled by exactly one of the two processes");
            localWork.Values.Should().OnlyContain(n => n == 1);
            answered.Values.Should().OnlyContain(n => n == 1, "no message is handled twice, in either process");

            peer.Kill();
            await Mesh.UntilAsync(() => node.Membership.Peers.Single().State == PeerState.Down, "the killed process's node to be down");
        }

        // Killed (SIGKILL): requests fail fast, and the queue carries on with the consumer that is left.
        var act = async () => await node.SendAsync("echo", Message("echo", 8));
        await act.Should().ThrowAsync<TransportUnavailableException>();
        var afterKill = Enumerable.Range(0, 20).Select(i => Message("work", i)).ToList();
        foreach (var message in afterKill)
        {
            await node.SendAsync("work", message);
        }

        await Mesh.UntilAsync(() => afterKill.All(m => localWork.ContainsKey(m.MessageId)), "the queue's messages to reach the consumer left");

        // Started again: the same cases work across the processes once more.
        using var restarted = NodeProcess.Start("node-1", ports[1], ports[0]);
        await restarted.WaitForReadyAsync(Bound);
        await node.Membership.WaitForAllUpAsync().WaitAsync(Bound);
        await Mesh.UntilAsync(() => node.Links[0].HasQueueConsumer("echo"), "the restarted process's consumers to be known here");
        var again = Message("echo", 9);
        await node.SendAsync("echo", again);
        await Mesh.UntilAsync(() => answered.ContainsKey(("echo", again.MessageId)), "the reply from the restarted node process");
        var news = Message("news", 10);
        await node.PublishAsync("news", news);
        await Mesh.UntilAsync(() => localNews.ContainsKey(news.MessageId) && answered.ContainsKey(("news", news.MessageId)), "the publish to reach both groups again");
        restarted.Kill();
    }

    /// <summary>The node process of <c>tests/Patterns.PeerLinks.TestNode</c>.</summary>
    private sealed class NodeProcess : IDisposable
    {
        private readonly Process _process;
        private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

        private NodeProcess(Process process)
        {
            _process = process;
            _process.OutputDataReceived += (_, e) =>
            {
                if (e.Data == "ready")
                {
                    _ready.TrySetResult();
                }
            };
            _process.BeginOutputReadLine();
        }

        public static NodeProcess Start(string nodeId, int port, int peerPort)
        {
            // The test assembly runs from tests/Patterns.PeerLinks.Tests/bin/<configuration>/<framework>/; the node
            // project builds to the same place under its own folder.
            var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
            var tests = output.Parent!.Parent!.Parent!.Parent!.FullName;
            var dll = Path.Combine(tests, "Patterns.PeerLinks.TestNode", "bin", output.Parent.Name, output.Name, "Patterns.PeerLinks.TestNode.dll");
            File.Exists(dll).Should().BeTrue($"the node process is built to {dll}");
            // Its standard input stays open while this process lives: the node ends when it closes (see its Program.cs).
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
            foreach (var argument in new[] { dll, nodeId, port.ToString(System.Globalization.CultureInfo.InvariantCulture), peerPort.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            {
                start.ArgumentList.Add(argument);
            }

            return new NodeProcess(Process.Start(start)!);
        }

        public Task WaitForReadyAsync(TimeSpan timeout) => _ready.Task.WaitAsync(timeout);

        public void Kill()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
            }
        }

        public void Dispose()
        {
            Kill();
            _process.Dispose();
        }
    }
}
