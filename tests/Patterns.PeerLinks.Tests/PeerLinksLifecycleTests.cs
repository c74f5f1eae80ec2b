using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>A node's start and leave when they fail or race: the listener never outlives the node, the leave follows the host's stop token.</summary>
public sealed class PeerLinksLifecycleTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact(Timeout = 120_000)]
    public async Task Dispose_AStepOfTheLeaveThrows_TheRestOfTheLeaveAndTheDisposalStillRun()
    {
        // The injected fault: the session reaper's timer (the first thing the leave disposes) throws on disposal. Before,
        // the leave stopped there: no link closed, the listener kept its port, the in-memory queues were never disposed.
        var port = Mesh.FreePort();
        var options = Mesh.Options(0, [port]);
        var node = await PeerLinksTransport.StartAsync(options, timeProvider: new ReaperFault(options.ReconnectGrace), loggerFactory: Mesh.Logs);

        var disposing = async () => await node.DisposeAsync().AsTask().WaitAsync(Bound);

        await disposing.Should().ThrowAsync<InvalidOperationException>().WithMessage("injected*");
        node.HasLeft.Should().BeTrue("the leave went on past the failed step");
        Refuses(port).Should().BeTrue("the listener was stopped");
        var declaring = async () => await node.Local.DeclareQueueAsync("after-dispose", new QueueSettings());
        await declaring.Should().ThrowAsync<ObjectDisposedException>("the in-memory queues were disposed");
    }

    [Fact(Timeout = 120_000)]
    public async Task Leave_WhileTheListenerStarts_TheStartStopsItsListenerAndThrows()
    {
        // The start is held just after Kestrel bound the port (its "Now listening on" line), before the node recorded the
        // listener; the leave runs to its end meanwhile. Before, the start then recorded the listener and returned: it
        // ran for good, since the leave, which stops the listener, had already passed.
        var port = Mesh.FreePort();
        var logs = new HoldingLogs("Now listening on");
        var node = new PeerLinksTransport(Mesh.Options(0, [port]), new JsonMessageSerializer(), TimeProvider.System, logs.Factory);
        try
        {
            var starting = Task.Run(() => node.StartAsync(CancellationToken.None));
            await logs.Reached.Task.WaitAsync(Bound);

            await node.LeaveAsync().WaitAsync(Bound);
            logs.Release();

            var start = async () => await starting.WaitAsync(Bound);
            (await start.Should().ThrowAsync<InvalidOperationException>()).Which.Message.Should().Contain("left its peers");
            Refuses(port).Should().BeTrue("the listener the start brought up was stopped again");
        }
        finally
        {
            logs.Release();
            await node.DisposeAsync();
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task HostStopTokenCancelled_TheLeaveStopsWaitingForAStuckHandler_AndStillStopsTheListener()
    {
        // The leave's own bounds are set far beyond the test, so only the host's stop token can end its wait for the
        // handler below, which ignores its own token. Before, the leave did not take the host's token at all.
        var port = Mesh.FreePort();
        await using var node = await PeerLinksTransport.StartAsync(Mesh.Options(0, [port]), loggerFactory: Mesh.Logs);
        node.Bounds = new(TimeSpan.FromHours(1), TimeSpan.FromHours(1), TimeSpan.FromHours(1));
        var queue = $"stuck-{Guid.NewGuid():N}";
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            await node.DeclareQueueAsync(queue, new QueueSettings { Capacity = 10 });
            await node.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, async (_, _) =>
            {
                entered.TrySetResult();
                await release.Task;
                return Settlement.Ack;
            });
            await node.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "stuck", Payload = new byte[8] });
            await entered.Task.WaitAsync(Bound);

            using var hostStop = new CancellationTokenSource();
            var stopped = new PeerLinksHostedService(node).StoppedAsync(hostStop.Token);
            await hostStop.CancelAsync();

            await stopped.WaitAsync(Bound);
            entered.Task.IsCompleted.Should().BeTrue();
            release.Task.IsCompleted.Should().BeFalse("the handler is still stuck: the leave stopped waiting for it");
            node.HasLeft.Should().BeTrue();
            Refuses(port).Should().BeTrue("the listener was stopped all the same");
        }
        finally
        {
            release.TrySetResult();
        }
    }

    private static bool Refuses(int port)
    {
        using var client = new TcpClient();
        try
        {
            client.Connect(IPAddress.Loopback, port);
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>The system clock, except that the timer of period <paramref name="reaperPeriod"/> (the session reaper's) throws when disposed asynchronously.</summary>
    private sealed class ReaperFault(TimeSpan reaperPeriod) : TimeProvider
    {
        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = System.CreateTimer(callback, state, dueTime, period);
            return period == reaperPeriod ? new FaultyTimer(timer) : timer;
        }

        private sealed class FaultyTimer(ITimer inner) : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(dueTime, period);

            public void Dispose() => inner.Dispose();

            public async ValueTask DisposeAsync()
            {
                await inner.DisposeAsync();
                throw new InvalidOperationException("injected: the reaper's timer failed to dispose");
            }
        }
    }

    /// <summary>Logs nowhere, but holds the thread that first logs a line containing the given text until <see cref="Release"/>.</summary>
    private sealed class HoldingLogs(string text) : ILoggerProvider, ILogger
    {
        private readonly ManualResetEventSlim _released = new();
        private int _armed = 1;

        public TaskCompletionSource Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ILoggerFactory Factory => LoggerFactory.Create(b => b.AddProvider(this).SetMinimumLevel(LogLevel.Trace));

        public void Release() => _released.Set();

        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (formatter(state, exception).Contains(text, StringComparison.Ordinal) && Interlocked.Exchange(ref _armed, 0) == 1)
            {
                Reached.TrySetResult();
                _released.Wait(Bound);
            }
        }

        public void Dispose()
        {
        }
    }
}
