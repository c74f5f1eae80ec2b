using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Hosting;
using Patterns.Messaging;
using Patterns.RequestResponse;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

/// <summary>
/// Tests that stop the broker (<c>rabbitmqctl stop_app</c>) or kill a consumer process. They run alone, after
/// every other test of this assembly, because a stopped broker would fail tests running beside them. The tests that stop
/// the broker stop a broker of their own when one is configured (PATTERNS_RABBITMQ_FAULTS; CI starts one), because test
/// assemblies run in parallel and other assemblies use the shared broker.
/// </summary>
[CollectionDefinition(nameof(BrokerFaults), DisableParallelization = true)]
public sealed class BrokerFaults;

[Collection(nameof(BrokerFaults))]
public sealed class RabbitMqFaultTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task BrokerRestart_DuringPublishAndConsume_LosesNoConfirmedMessage()
    {
        await Broker.RequireFaultsBrokerAsync();
        var options = Broker.Options("restart");
        var transport = Broker.Create(options);
        await using var _ = new Cleanup(transport);
        await transport.DeclareQueueAsync("orders", new QueueSettings { Capacity = 100_000 });
        var received = new ConcurrentDictionary<Guid, int>();
        var progress = new SemaphoreSlim(0);
        var handledBeforeStop = 0;
        var stopped = false;
        var connectionLost = 0;
        await using var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest
            {
                Address = TransportAddress.Queue("orders"),
                ConsumerGroup = "orders",
                Concurrency = 4,
                ConnectionLost = _ => Interlocked.Increment(ref connectionLost),
            },
            (envelope, _) =>
            {
                received.AddOrUpdate(envelope.MessageId, 1, (_, n) => n + 1);
                if (!Volatile.Read(ref stopped))
                {
                    Interlocked.Increment(ref handledBeforeStop);
                }

                progress.Release();
                return new(Settlement.Ack);
            });

        const int total = 600;
        var confirmed = new ConcurrentQueue<Guid>();
        var halfway = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var publisher = Task.Run(async () =>
        {
            for (var i = 0; i < total; i++)
            {
                var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "order", Payload = BitConverter.GetBytes(i) };
                await transport.SendAsync("orders", envelope);
                confirmed.Enqueue(envelope.MessageId);
                if (i == total / 3)
                {
                    halfway.TrySetResult();
                }
            }
        });

        await halfway.Task.WaitAsync(Wait);
        try
        {
            Volatile.Write(ref stopped, true);
            await Rabbitmqctl.RunAsync("stop_app");
        }
        finally
        {
            await Rabbitmqctl.StartAsync();
        }

        await publisher.WaitAsync(Wait);
        var deadline = Stopwatch.StartNew();
        while (!confirmed.All(received.ContainsKey))
        {
            (await progress.WaitAsync(Remaining(Wait, deadline))).Should().BeTrue("every confirmed message must arrive after the restart");
        }

        confirmed.Should().HaveCount(total, "sends wait for the connection to come back instead of failing");
        received.Keys.Should().Contain(confirmed, "no confirmed message is lost");
        Volatile.Read(ref handledBeforeStop).Should().BePositive("the consumer was busy when the broker stopped");
        Volatile.Read(ref connectionLost).Should().BePositive("the consumer saw the broker go away");
    }

    [Fact]
    public async Task BrokerGoesAway_PendingRequestFailsAtOnce_AndRequestsWorkAgainAfterItIsBack()
    {
        await Broker.RequireFaultsBrokerAsync();
        var handling = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await RabbitHost.StartAsync("rr-fault", b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>(async (request, _) =>
            {
                if (request.Symbol == "BLOCK")
                {
                    handling.TrySetResult();
                    await release.Task;
                }

                return new Quote(request.Symbol, 1m);
            })));
        var client = host.Get<IRequestClient>();
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("WARM"))).Symbol.Should().Be("WARM");

        var pending = client.SendAsync<GetQuote, Quote>(new GetQuote("BLOCK"), TimeSpan.FromMinutes(10)).AsTask();
        await handling.Task.WaitAsync(Wait);
        try
        {
            await Rabbitmqctl.RunAsync("stop_app");

            // The request's own timeout is ten minutes: it must fail long before, with the reason.
            var lost = async () => await pending.WaitAsync(Wait);
            (await lost.Should().ThrowAsync<TransportUnavailableException>()).Which.Message.Should().Contain("tests.get-quote").And.Contain("lost");

            // With the broker still down, a new request ends at its timeout, not later.
            var whileDown = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote("DOWN"), TimeSpan.FromSeconds(1)).AsTask().WaitAsync(Wait);
            await whileDown.Should().ThrowAsync<RequestTimeoutException>();
        }
        finally
        {
            release.TrySetResult();
            await Rabbitmqctl.StartAsync();
        }

        (await client.SendAsync<GetQuote, Quote>(new GetQuote("AGAIN"), TimeSpan.FromSeconds(60))).Symbol.Should().Be("AGAIN");
    }

    [Fact]
    public async Task ConsumerProcessKilledMidMessage_MessageIsDeliveredAgainToAnotherConsumer()
    {
        await Broker.RequireAsync();
        var options = Broker.Options("killed");
        var transport = Broker.Create(options);
        await using var _ = new Cleanup(transport);
        await transport.DeclareQueueAsync("handover", new QueueSettings());
        var sent = new Envelope { MessageId = Guid.NewGuid(), MessageType = "job", Payload = "{}"u8.ToArray() };
        await transport.SendAsync("handover", sent);

        using (var child = ConsumerProcess.Start(Broker.Address, options.NamePrefix, "handover"))
        {
            var line = await child.WaitForLineAsync(l => l.StartsWith("HANDLING ", StringComparison.Ordinal), Wait);
            line.Should().Be($"HANDLING {sent.MessageId} 0");
            await child.KillAsync(Wait);
        }

        var redelivered = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var subscription = await transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue("handover"), ConsumerGroup = "handover" },
            (envelope, _) =>
            {
                redelivered.TrySetResult(envelope);
                return new(Settlement.Ack);
            });

        var got = await redelivered.Task.WaitAsync(Wait);
        got.MessageId.Should().Be(sent.MessageId);
        got.DeliveryCount.Should().Be(1, "the broker marks a message it takes back from a dead consumer as redelivered");
    }

    internal static TimeSpan Remaining(TimeSpan wait, Stopwatch elapsed) => wait > elapsed.Elapsed ? wait - elapsed.Elapsed : TimeSpan.Zero;

    /// <summary>Disposes a transport and deletes what it declared.</summary>
    private sealed class Cleanup(MessageTransport transport) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await transport.DisposeAsync();
            await Broker.DeleteTopologyAsync(transport);
        }
    }
}

/// <summary>Runs rabbitmqctl, for stopping and starting the broker application.</summary>
internal static class Rabbitmqctl
{
    public static async Task RunAsync(string arguments)
    {
        // On the faults broker when the test runs on it (Broker.RequireFaultsBrokerAsync), on the default node otherwise.
        using var process = Process.Start(new ProcessStartInfo("rabbitmqctl", Broker.Node is { } node ? $"-n {node} {arguments}" : arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        }) ?? throw new InvalidOperationException("rabbitmqctl did not start.");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        process.ExitCode.Should().Be(0, $"rabbitmqctl {arguments} should succeed: {await output} {await error}");
    }

    /// <summary>
    /// Closes, on the broker, every connection whose client-provided name is <paramref name="connectionName"/>, and only
    /// those (other tests share the broker).
    /// </summary>
    /// <returns>How many connections were closed.</returns>
    public static async Task<int> CloseConnectionsNamedAsync(string connectionName)
    {
        using var process = Process.Start(new ProcessStartInfo("rabbitmqctl", "list_connections pid client_properties -q")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        }) ?? throw new InvalidOperationException("rabbitmqctl did not start.");
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        var closed = 0;
        foreach (var line in output.Split('\n'))
        {
            // The name is unique to the test (a GUID in it), so finding it anywhere in the client properties is enough.
            if (!line.Contains(connectionName, StringComparison.Ordinal))
            {
                continue;
            }

            var pid = line.Split('\t')[0].Trim();
            await RunAsync($"close_connection \"{pid}\" \"closed by a connection-loss test\"");
            closed++;
        }

        return closed;
    }

    /// <summary>Starts the broker application and waits until it accepts connections again.</summary>
    public static async Task StartAsync()
    {
        await RunAsync("start_app");
        await RunAsync("await_startup");
    }
}

/// <summary>The consumer process of <c>tests/Patterns.RabbitMq.TestConsumer</c>.</summary>
internal sealed class ConsumerProcess : IDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly SemaphoreSlim _lineArrived = new(0);

    private ConsumerProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                _lines.Enqueue(line);
                _lineArrived.Release();
            }
        };
        _process.BeginOutputReadLine();
    }

    public static ConsumerProcess Start(params string[] arguments)
    {
        // The test assembly runs from tests/Patterns.RabbitMq.Tests/bin/<configuration>/<framework>/; the consumer
        // project builds to the same place under its own folder.
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = output.Name;
        var configuration = output.Parent!.Name;
        var tests = output.Parent.Parent!.Parent!.Parent!.FullName;
        var dll = Path.Combine(tests, "Patterns.RabbitMq.TestConsumer", "bin", configuration, framework, "Patterns.RabbitMq.TestConsumer.dll");
        File.Exists(dll).Should().BeTrue($"the consumer process is built to {dll}");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add(dll);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        return new ConsumerProcess(Process.Start(start) ?? throw new InvalidOperationException("The consumer process did not start."));
    }

    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            while (_lines.TryDequeue(out var line))
            {
                if (match(line))
                {
                    return line;
                }
            }

            _process.HasExited.Should().BeFalse("the consumer process should still run");
            (await _lineArrived.WaitAsync(RabbitMqFaultTests.Remaining(timeout, deadline))).Should().BeTrue("the consumer process should report what it handles");
        }
    }

    public async Task KillAsync(TimeSpan timeout)
    {
        _process.Kill(entireProcessTree: true);
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
        _lineArrived.Dispose();
    }
}
