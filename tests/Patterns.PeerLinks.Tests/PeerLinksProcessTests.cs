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
        (await act.Should().ThrowAsync<QueueNotFoundException>()).Which.Message.Should().Contain("echo");
        // "At once" against the 60 s the request would otherwise wait (Bound); a busy machine gets a third of that.
        failing.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(20), "a request to a handler no running node hosts fails at once, not at its timeout");

        using var restarted = NodeProcess.Start("node-1", ports[1], ports[0]);
        await restarted.WaitForReadyAsync(Bound);
        await node.Membership.WaitForAllUpAsync().WaitAsync(Bound);
        var reply = await RequestAsync(3);
        BitConverter.ToInt32(reply.Payload.Span).Should().Be(3);
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
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, UseShellExecute = false };
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
