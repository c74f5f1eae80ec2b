using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Resilience;
using Patterns.Testing;
using Polly.CircuitBreaker;

namespace Patterns.Core.Tests.Resilience;

public sealed record Ping(int Id);

public sealed class ResilienceTests
{
    [Fact]
    public async Task AttemptTimeout_HandlerHangs_TimesOutOnVirtualTimeAndDeadLetters()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        using var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Ping>("slow", async (_, _, ct) =>
            await Task.Delay(Timeout.InfiniteTimeSpan, ct), o => { o.Retry = null; o.AttemptTimeout = TimeSpan.FromSeconds(2); })), time);

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("slow", new Ping(1));
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(2));
        await host.Harness().WaitForDeliveriesAsync(1).WaitAsync(TestHost.Wait);

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "slow", 1);
        dead.Should().ContainSingle().Which.ExceptionType.Should().Be("Polly.Timeout.TimeoutRejectedException");
    }

    [Fact]
    public async Task MaxConcurrentCalls_LimitReached_ExtraCallsRejectedWithClearException()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<Ping, int>(async (p, _) =>
        {
            entered.TrySetResult();
            await gate.Task;
            return p.Id;
        }, o => o.MaxConcurrentCalls = 1)));
        var client = host.Services.GetRequiredService<IRequestClient>();

        var first = client.SendAsync<Ping, int>(new Ping(1)).AsTask();
        await entered.Task.WaitAsync(TestHost.Wait);
        var second = async () => await client.SendAsync<Ping, int>(new Ping(2));

        var rejected = (await second.Should().ThrowAsync<RequestFailedException>()).Which;
        rejected.RemoteErrorType.Should().Be(typeof(ConcurrencyLimitExceededException).FullName);
        rejected.RemoteMessage.Should().Contain("1 running and 0 queued");
        gate.SetResult();
        (await first).Should().Be(1);
    }

    [Fact]
    public async Task CircuitBreaker_AfterFailures_OpensAndRejectsFast()
    {
        var calls = 0;
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<Ping, int>((p, _) =>
        {
            Interlocked.Increment(ref calls);
            throw new InvalidOperationException("downstream failed");
        }, o => o.CircuitBreaker = new CircuitBreakerStrategyOptions { FailureRatio = 0.5, MinimumThroughput = 2, BreakDuration = TimeSpan.FromMinutes(1) })));
        var client = host.Services.GetRequiredService<IRequestClient>();

        for (var i = 0; i < 2; i++)
        {
            var failing = async () => await client.SendAsync<Ping, int>(new Ping(i));
            (await failing.Should().ThrowAsync<RequestFailedException>()).Which.RemoteErrorType.Should().Be(typeof(InvalidOperationException).FullName);
        }

        var open = async () => await client.SendAsync<Ping, int>(new Ping(3));

        (await open.Should().ThrowAsync<RequestFailedException>()).Which.RemoteErrorType.Should().Be(typeof(BrokenCircuitException).FullName);
        calls.Should().Be(2, "an open circuit rejects without calling the handler");
    }
}
