using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.Messaging;
using Patterns.RequestResponse;
using Patterns.Testing;

namespace Patterns.Core.Tests.RequestResponse;

/// <summary>In-process calls made once a pair's route is cached: they go straight to the handler.</summary>
public sealed class InlineRouteTests
{
    [Fact]
    public async Task TwoHostsInOneProcess_SamePair_EachClientCallsItsOwnHandler()
    {
        using var hostA = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => new ValueTask<Quote>(new Quote("A", 1m)))));
        using var hostB = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => new ValueTask<Quote>(new Quote("B", 2m)))));
        using var hostC = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<Slow, Quote>((s, _) => new ValueTask<Quote>(new Quote("C", 3m)))));
        var a = hostA.Services.GetRequiredService<IRequestClient>();
        var b = hostB.Services.GetRequiredService<IRequestClient>();
        var c = hostC.Services.GetRequiredService<IRequestClient>();

        for (var i = 0; i < 3; i++)
        {
            (await a.SendAsync<GetQuote, Quote>(new GetQuote("x"))).Symbol.Should().Be("A");
            (await b.SendAsync<GetQuote, Quote>(new GetQuote("x"))).Symbol.Should().Be("B");
            (await a.SendAsync<GetQuote, Quote>(new GetQuote("x"), TimeSpan.FromMinutes(1))).Symbol.Should().Be("A");
            (await b.SendAsync<GetQuote, Quote>(new GetQuote("x"), Timeout.InfiniteTimeSpan)).Symbol.Should().Be("B");
            (await b.GetResponseAsync<GetQuote, Quote>(new GetQuote("x"), default(MessageOptions))).Message.Symbol.Should().Be("B");
            var missing = async () => await c.SendAsync<GetQuote, Quote>(new GetQuote("x"));
            await missing.Should().ThrowAsync<HandlerNotFoundException>("host C registers no handler for the pair the other hosts answer");
        }

        await hostA.StopAsync();
        hostA.Dispose();
        (await b.SendAsync<GetQuote, Quote>(new GetQuote("x"))).Symbol.Should().Be("B");
    }

    [Fact]
    public async Task AfterTheRouteIsCached_DefaultAndPerCallTimeouts_EachApplyTheirOwnValue()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(
            b => b.AddRequestResponse(r => r
                .AddHandler<Slow, Quote>(async (request, ct) =>
                {
                    if (request.Id == 0)
                    {
                        return new Quote("first", 0);
                    }

                    using var registration = ct.Register(() => cancelled.TrySetResult());
                    await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                    return new Quote("never", 0);
                })
                .Configure(o => o.DefaultTimeout = TimeSpan.FromSeconds(7))),
            time);
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<Slow, Quote>(new Slow(0));
        await client.SendAsync<Slow, Quote>(new Slow(0), TimeSpan.FromSeconds(3));

        var running = time.PendingTimers;
        var perCall = client.SendAsync<Slow, Quote>(new Slow(1), TimeSpan.FromSeconds(3)).AsTask();
        await time.WaitForPendingTimersAsync(running + 1).WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(3));
        (await perCall.Invoking(p => p).Should().ThrowAsync<RequestTimeoutException>()).Which.Timeout.Should().Be(TimeSpan.FromSeconds(3));
        await cancelled.Task.WaitAsync(TestHost.Wait);

        cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        running = time.PendingTimers;
        var byDefault = client.SendAsync<Slow, Quote>(new Slow(2)).AsTask();
        await time.WaitForPendingTimersAsync(running + 1).WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(3));
        byDefault.IsCompleted.Should().BeFalse("the default timeout is 7 seconds, not the previous call's 3");
        fake.Advance(TimeSpan.FromSeconds(4));
        (await byDefault.Invoking(p => p).Should().ThrowAsync<RequestTimeoutException>()).Which.Timeout.Should().Be(TimeSpan.FromSeconds(7));
        await cancelled.Task.WaitAsync(TestHost.Wait);
    }

    [Fact]
    public async Task AfterTheRouteIsCached_InfiniteDefaultTimeout_HandlerGetsTheCallersToken()
    {
        CancellationToken seen = default;
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((q, ct) =>
            {
                seen = ct;
                return new ValueTask<Quote>(new Quote(q.Symbol, 1m));
            })
            .Configure(o => o.DefaultTimeout = Timeout.InfiniteTimeSpan)));
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));
        using var cts = new CancellationTokenSource();

        for (var i = 0; i < 3; i++)
        {
            await client.SendAsync<GetQuote, Quote>(new GetQuote("B"), cts.Token);
            seen.Should().Be(cts.Token, "with no timeout the handler is given the caller's token");
            await client.SendAsync<GetQuote, Quote>(new GetQuote("C"));
            seen.CanBeCanceled.Should().BeFalse("with no timeout and no caller token nothing can cancel the handler");
        }
    }

    [Fact]
    public async Task AfterTheRouteIsCached_HandlerReturningAFaultedValueTask_FailsEachTime_AndTheNextCallSucceeds()
    {
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) =>
            q.Symbol == "BAD" ? ValueTask.FromException<Quote>(new InvalidOperationException("bad")) : new ValueTask<Quote>(new Quote(q.Symbol, 1m)))));
        var client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));

        for (var i = 0; i < 3; i++)
        {
            var act = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote("BAD"));
            (await act.Should().ThrowAsync<RequestFailedException>()).Which.RemoteErrorType.Should().Be(typeof(InvalidOperationException).FullName);
            (await client.SendAsync<GetQuote, Quote>(new GetQuote("B"))).Symbol.Should().Be("B");
        }
    }

    [Fact]
    public async Task NestedRequestThatGoesAsynchronous_InsideASynchronousHandler_KeepsItsTokenWhileLaterRequestsRun()
    {
        var nestedStarted = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task<Quote>? nested = null;
        CancellationToken lastFast = default;
        IRequestClient? client = null;
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<Slow, Quote>(async (request, ct) =>
            {
                nestedStarted.TrySetResult(ct);
                await release.Task.WaitAsync(ct);
                ct.ThrowIfCancellationRequested();
                return new Quote("nested", request.Id);
            })
            .AddHandler<GetQuote, Quote>((q, ct) =>
            {
                lastFast = ct;
                if (q.Symbol == "nest")
                {
                    nested = client!.SendAsync<Slow, Quote>(new Slow(9)).AsTask();
                }

                return new ValueTask<Quote>(new Quote(q.Symbol, 1m));
            })));
        client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));

        (await client.SendAsync<GetQuote, Quote>(new GetQuote("nest"))).Symbol.Should().Be("nest");
        var nestedToken = await nestedStarted.Task.WaitAsync(TestHost.Wait);
        for (var i = 0; i < 3; i++)
        {
            (await client.SendAsync<GetQuote, Quote>(new GetQuote("B"))).Symbol.Should().Be("B");
            lastFast.Should().NotBe(nestedToken, "a token a running handler holds is never handed to another request");
        }

        nestedToken.IsCancellationRequested.Should().BeFalse();
        release.TrySetResult();
        (await nested!.WaitAsync(TestHost.Wait)).Price.Should().Be(9m);
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("C"))).Symbol.Should().Be("C");
    }

    [Fact]
    public async Task HandlerThatSendsNestedRequestsBeforeAndAfterGoingAsynchronous_StillTimesOutWithItsOwnToken()
    {
        var handlerCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        IRequestClient? client = null;
        using var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r
            .AddHandler<GetQuote, Quote>((q, ct) =>
            {
                // The nested request's handler re-enters the client on the same thread.
                if (q.Symbol == "deep")
                {
                    return new ValueTask<Quote>(new Quote(q.Symbol, 1m));
                }

                var deep = client!.SendAsync<GetQuote, Quote>(new GetQuote("deep"));
                deep.IsCompletedSuccessfully.Should().BeTrue();
                return new ValueTask<Quote>(new Quote(q.Symbol, deep.Result.Price + 1m));
            })
            .AddHandler<Slow, Quote>(async (request, ct) =>
            {
                if (request.Id == 0)
                {
                    return new Quote("first", 0);
                }

                using var registration = ct.Register(() => handlerCancelled.TrySetResult());
                (await client!.SendAsync<GetQuote, Quote>(new GetQuote("before"))).Price.Should().Be(2m);
                await Task.Yield();
                (await client!.SendAsync<GetQuote, Quote>(new GetQuote("after"))).Price.Should().Be(2m);
                await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                return new Quote("never", 0);
            })
            .Configure(o => o.DefaultTimeout = TimeSpan.FromMilliseconds(50))));
        client = host.Services.GetRequiredService<IRequestClient>();
        await client.SendAsync<GetQuote, Quote>(new GetQuote("A"));
        await client.SendAsync<Slow, Quote>(new Slow(0));

        var act = async () => await client.SendAsync<Slow, Quote>(new Slow(1)).AsTask().WaitAsync(TestHost.Wait);

        (await act.Should().ThrowAsync<RequestTimeoutException>()).Which.Timeout.Should().Be(TimeSpan.FromMilliseconds(50));
        await handlerCancelled.Task.WaitAsync(TestHost.Wait);
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("B"))).Price.Should().Be(2m);
    }
}
