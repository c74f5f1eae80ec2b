using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;
using Patterns.Testing;
using Polly;
using Polly.Retry;

namespace Patterns.Core.Tests.EventSourcing;

public sealed class ScopedCountingHandler(Recorder recorder) : IEventHandler
{
    private static int s_instances;

    public static int Instances => Volatile.Read(ref s_instances);

    public int Id { get; } = Interlocked.Increment(ref s_instances);

    public ValueTask HandleAsync(RecordedEvent @event, CancellationToken cancellationToken) => recorder.RecordAsync(@event, cancellationToken);
}

public sealed class SubscriptionTests
{
    private static RetryStrategyOptions NoDelayRetries(int attempts) => new()
    {
        MaxRetryAttempts = attempts,
        Delay = TimeSpan.Zero,
        BackoffType = DelayBackoffType.Constant,
        UseJitter = false,
    };

    [Fact]
    public async Task Subscription_HistoryThenLive_SeesEveryEventOnceInOrder()
    {
        var storage = new InMemoryEventStorage();
        var recorder = new Recorder();
        using (var writer = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage)))
        {
            await writer.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m), new Deposited(2m)]);
        }

        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("audit", (e, ct) => recorder.RecordAsync(e, ct)));
        await recorder.WaitForCountAsync(3);
        await host.Store().AppendAsync("account-2", ExpectedVersion.NoStream, [new AccountOpened("bob"), new Deposited(5m)]);
        var last = await host.Store().AppendAsync("account-1", ExpectedVersion.Exact(3), new Withdrawn(1m));
        await host.Subscriptions().WaitForPositionAsync("audit", last.LastPosition).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Position).Should().Equal(1, 2, 3, 4, 5, 6);
        recorder.Events[5].Data.Should().Be(new Withdrawn(1m));
        var status = host.Subscriptions().GetStatus("audit");
        status.Checkpoint.Should().Be(6);
        status.ProcessedPosition.Should().Be(6);
        status.State.Should().BeOneOf(SubscriptionState.CatchingUp, SubscriptionState.Live);
        status.Error.Should().BeNull();
    }

    [Fact]
    public async Task Subscription_RestartedHost_ResumesFromTheDurableCheckpoint()
    {
        var storage = new InMemoryEventStorage();
        var first = new Recorder();
        using (var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("mailer", (e, ct) => first.RecordAsync(e, ct), o => o.CheckpointInterval = 1000)))
        {
            var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m), new Deposited(2m)]);
            await host.Subscriptions().WaitForPositionAsync("mailer", result.LastPosition).WaitAsync(TestHost.Wait);
            await host.StopAsync();
        }

        (await ((ICheckpointStore)storage).LoadAsync("mailer")).Should().Be(3);
        await storage.AppendAsync("account-1", ExpectedVersion.Exact(3), [new SerializedEvent(Guid.NewGuid(), "bank.deposited", "{\"amount\":4}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);

        var second = new Recorder();
        using var restarted = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("mailer", (e, ct) => second.RecordAsync(e, ct)));
        await restarted.Subscriptions().WaitForPositionAsync("mailer", 4).WaitAsync(TestHost.Wait);

        first.Events.Should().HaveCount(3);
        second.Events.Select(e => e.Data).Should().Equal(new Deposited(4m));
    }

    [Fact]
    public async Task Subscription_HandlerKeepsFailing_RetriedThenFaultedWithoutMovingPastTheEvent()
    {
        var storage = new InMemoryEventStorage();
        var attempts = 0;
        var broken = true;
        var handled = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("billing", (e, ct) =>
        {
            if (e.Data is Withdrawn && Volatile.Read(ref broken))
            {
                Interlocked.Increment(ref attempts);
                throw new InvalidOperationException("billing is down");
            }

            return handled.RecordAsync(e, ct);
        }, o => { o.Retry = NoDelayRetries(2); o.CheckpointInterval = 1; }));
        var store = host.Store();
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(5m), new Withdrawn(2m), new Deposited(1m)]);

        var wait = () => host.Subscriptions().WaitForPositionAsync("billing", 4).WaitAsync(TestHost.Wait);

        var thrown = await wait.Should().ThrowAsync<SubscriptionFaultedException>();
        thrown.Which.Subscription.Should().Be("billing");
        thrown.Which.Position.Should().Be(3);
        thrown.Which.StreamId.Should().Be("account-1");
        thrown.Which.Version.Should().Be(3);
        thrown.Which.InnerException.Should().BeOfType<InvalidOperationException>().Which.Message.Should().Be("billing is down");
        thrown.Which.Message.Should().Contain("billing").And.Contain("position 3").And.Contain("billing is down");
        attempts.Should().Be(3, "one attempt and two retries");
        handled.Events.Select(e => e.Position).Should().Equal(1, 2);
        var status = host.Subscriptions().GetStatus("billing");
        status.State.Should().Be(SubscriptionState.Faulted);
        status.Checkpoint.Should().Be(2, "the checkpoint never moves past an event that was not handled");
        status.Error.Should().BeSameAs(thrown.Which);
        (await ((ICheckpointStore)storage).LoadAsync("billing")).Should().Be(2);

        Volatile.Write(ref broken, false);
        await host.Subscriptions().RestartAsync("billing");
        await host.Subscriptions().WaitForPositionAsync("billing", 4).WaitAsync(TestHost.Wait);
        handled.Events.Select(e => e.Position).Should().Equal(1, 2, 3, 4);
    }

    [Fact]
    public async Task Subscription_RetryDelay_WaitsOnTheTimeProvider()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var attempts = 0;
        // Without the lease, the retry delay is the only timer: a pending lease-renewal timer would otherwise satisfy
        // the wait below before the first attempt has run.
        using var host = await EventSourcingHost.StartAsync(es => es.Configure(o => o.ExclusiveOwnership = false).AddSubscription("flaky", (e, _) =>
            Interlocked.Increment(ref attempts) == 1 ? throw new TimeoutException("first attempt times out") : ValueTask.CompletedTask,
            o => o.Retry = new RetryStrategyOptions { MaxRetryAttempts = 1, Delay = TimeSpan.FromSeconds(10), BackoffType = DelayBackoffType.Constant, UseJitter = false }), time);
        var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, new AccountOpened("ada"));

        await Eventually.HoldsAsync(() => Volatile.Read(ref attempts) == 1);
        await time.WaitForPendingTimersAsync(1).WaitAsync(TestHost.Wait);
        Volatile.Read(ref attempts).Should().Be(1);
        fake.Advance(TimeSpan.FromSeconds(10));
        await host.Subscriptions().WaitForPositionAsync("flaky", result.LastPosition).WaitAsync(TestHost.Wait);

        attempts.Should().Be(2);
    }

    [Fact]
    public async Task Subscription_ParkMode_RecordsTheEventAndGoesOn()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        var handled = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.AddSubscription("notifier", (e, ct) =>
            e.Data is Withdrawn ? throw new ArgumentException("no template for withdrawals") : handled.RecordAsync(e, ct),
            o => { o.OnFailure = SubscriptionFailureMode.Park; o.Retry = NoDelayRetries(1); }), time);
        var withdrawal = new EventData(new Withdrawn(3m));
        var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new EventData(new AccountOpened("ada")), withdrawal, new EventData(new Deposited(1m))]);

        await host.Subscriptions().WaitForPositionAsync("notifier", result.LastPosition).WaitAsync(TestHost.Wait);

        handled.Events.Select(e => e.Position).Should().Equal(1, 3);
        var parked = await host.Subscriptions().GetParkedEventsAsync("notifier").CollectAsync();
        parked.Should().ContainSingle().Which.Should().Be(new ParkedEvent(
            "notifier", withdrawal.EventId, "account-1", 2, 2, "bank.withdrawn",
            "System.ArgumentException: no template for withdrawals", time.GetUtcNow()));
        host.Subscriptions().GetStatus("notifier").State.Should().NotBe(SubscriptionState.Faulted);
    }

    [Fact]
    public async Task ReplayParkedEvents_AfterAFix_HandlesThemRemovesTheHandledAndKeepsRunning()
    {
        var fake = new FakeTimeProvider(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
        var time = new TimerTracker(fake);
        var fixedTemplates = false;
        var handled = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.AddSubscription("notifier", (e, ct) => e.Data switch
        {
            Withdrawn when !Volatile.Read(ref fixedTemplates) => throw new ArgumentException("no template for withdrawals"),
            AccountClosed => throw new ArgumentException("no template for closures"),
            _ => handled.RecordAsync(e, ct),
        }, o => { o.OnFailure = SubscriptionFailureMode.Park; o.Retry = null; }), time);
        var subscriptions = host.Subscriptions();
        var first = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Withdrawn(3m), new AccountClosed("moved")]);
        await subscriptions.WaitForPositionAsync("notifier", first.LastPosition).WaitAsync(TestHost.Wait);
        (await subscriptions.GetParkedEventsAsync("notifier").CollectAsync()).Select(p => p.Position).Should().Equal(2, 3);

        Volatile.Write(ref fixedTemplates, true);
        fake.Advance(TimeSpan.FromHours(1));
        var replayed = await subscriptions.ReplayParkedEventsAsync("notifier").WaitAsync(TestHost.Wait);

        replayed.Should().Be(1);
        handled.Events.Select(e => e.Position).Should().Equal(1, 2);
        var stillParked = (await subscriptions.GetParkedEventsAsync("notifier").CollectAsync()).Should().ContainSingle().Subject;
        stillParked.Position.Should().Be(3);
        stillParked.Error.Should().Be("System.ArgumentException: no template for closures");
        stillParked.ParkedAt.Should().Be(time.GetUtcNow(), "the record shows the latest failure");
        var next = await host.Store().AppendAsync("account-2", ExpectedVersion.NoStream, new AccountOpened("bob"));
        await subscriptions.WaitForPositionAsync("notifier", next.LastPosition).WaitAsync(TestHost.Wait);
        handled.Events.Select(e => e.Position).Should().Equal(1, 2, 4);
        (await subscriptions.ReplayParkedEventsAsync("notifier").WaitAsync(TestHost.Wait)).Should().Be(0);
        await FluentActions.Awaiting(() => subscriptions.ReplayParkedEventsAsync("nope")).Should().ThrowAsync<ArgumentException>().WithMessage("*'nope'*");
    }

    [Fact]
    public async Task ReplayParkedEvents_EventHardDeletedSinceItWasParked_DropsTheRecord()
    {
        var calls = 0;
        using var host = await EventSourcingHost.StartAsync(es => es.AddSubscription("notifier", (e, _) =>
        {
            Interlocked.Increment(ref calls);
            return e.Data is Withdrawn ? throw new ArgumentException("no template") : ValueTask.CompletedTask;
        }, o => { o.OnFailure = SubscriptionFailureMode.Park; o.Retry = null; }));
        var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Withdrawn(1m)]);
        await host.Subscriptions().WaitForPositionAsync("notifier", result.LastPosition).WaitAsync(TestHost.Wait);
        await host.Store().DeleteStreamAsync("account-1", ExpectedVersion.Any, StreamDeleteMode.Hard);

        var replayed = await host.Subscriptions().ReplayParkedEventsAsync("notifier").WaitAsync(TestHost.Wait);

        replayed.Should().Be(0);
        Volatile.Read(ref calls).Should().Be(2, "nothing is left to hand to the handler");
        (await host.Subscriptions().GetParkedEventsAsync("notifier").CollectAsync()).Should().BeEmpty();
    }

    [Fact]
    public async Task GetParkedEvents_NameThatPrefixesAnother_ListsOnlyItsOwn()
    {
        using var host = await EventSourcingHost.StartAsync(es => es
            .AddSubscription("alerts", (e, _) => e.Data is Withdrawn ? throw new InvalidOperationException("alerts") : ValueTask.CompletedTask, o => { o.OnFailure = SubscriptionFailureMode.Park; o.Retry = null; })
            .AddSubscription("alerts/sms", (e, _) => e.Data is Deposited ? throw new InvalidOperationException("sms") : ValueTask.CompletedTask, o => { o.OnFailure = SubscriptionFailureMode.Park; o.Retry = null; }));
        var result = await host.Store().AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(5m), new Withdrawn(1m)]);
        await host.Subscriptions().WaitForPositionAsync("alerts", result.LastPosition).WaitAsync(TestHost.Wait);
        await host.Subscriptions().WaitForPositionAsync("alerts/sms", result.LastPosition).WaitAsync(TestHost.Wait);

        var alerts = await host.Subscriptions().GetParkedEventsAsync("alerts").CollectAsync();
        var sms = await host.Subscriptions().GetParkedEventsAsync("alerts/sms").CollectAsync();

        alerts.Should().ContainSingle().Which.Should().Match<ParkedEvent>(p => p.Subscription == "alerts" && p.Position == 3);
        sms.Should().ContainSingle().Which.Should().Match<ParkedEvent>(p => p.Subscription == "alerts/sms" && p.Position == 2);
    }

    [Fact]
    public async Task Subscription_UnknownEventTypeInTheLog_FaultsNamingIt()
    {
        var storage = new InMemoryEventStorage();
        await storage.AppendAsync("x-1", ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), "nobody.knows", "{}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("all", (_, _) => ValueTask.CompletedTask));

        var wait = () => host.Subscriptions().WaitForPositionAsync("all", 1).WaitAsync(TestHost.Wait);

        (await wait.Should().ThrowAsync<SubscriptionFaultedException>()).Which.InnerException.Should().BeOfType<UnknownEventTypeException>()
            .Which.EventType.Should().Be("nobody.knows");
    }

    [Fact]
    public async Task Subscription_OneStream_SeesOnlyThatStreamAndCheckpointsItsVersion()
    {
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.AddSubscription("one", (e, ct) => recorder.RecordAsync(e, ct), o =>
        {
            o.StreamId = "account-2";
            o.EventTypes.Add(typeof(Deposited));
        }));
        var store = host.Store();
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, [new AccountOpened("ada"), new Deposited(1m)]);
        await store.AppendAsync("account-2", ExpectedVersion.NoStream, [new AccountOpened("bob"), new Deposited(2m)]);
        await store.AppendAsync("account-10", ExpectedVersion.NoStream, [new AccountOpened("eve"), new Deposited(3m)]);
        var last = await store.AppendAsync("account-2", ExpectedVersion.Exact(2), new Deposited(4m));

        await host.Subscriptions().WaitForPositionAsync("one", last.LastPosition).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Data).Should().Equal(new Deposited(2m), new Deposited(4m));
        host.Subscriptions().GetStatus("one").Checkpoint.Should().Be(3, "a one-stream subscription checkpoints the stream version");
    }

    [Fact]
    public async Task Subscription_FilteredByTypeAndPrefix_SeesOnlyMatchingEvents()
    {
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es
            .AddEvent<OrderPlacedEvent>().AddEvent<OrderShippedEvent>()
            .AddSubscription("orders", (e, ct) => recorder.RecordAsync(e, ct), o => { o.EventTypes.Add(typeof(IOrderEvent)); o.StreamPrefix = "order-"; }));
        var store = host.Store();
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [new OrderPlacedEvent("1", 1m), new OrderShippedEvent("1")]);
        await store.AppendAsync("account-1", ExpectedVersion.NoStream, new AccountOpened("ada"));
        await store.AppendAsync("archive-order-2", ExpectedVersion.NoStream, new OrderPlacedEvent("2", 2m));
        var last = await store.AppendAsync("order-3", ExpectedVersion.NoStream, new OrderPlacedEvent("3", 3m));

        await host.Subscriptions().WaitForPositionAsync("orders", last.LastPosition).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.StreamId).Should().Equal("order-1", "order-1", "order-3");
        host.Subscriptions().GetStatus("orders").Checkpoint.Should().Be(5);
    }

    [Fact]
    public async Task Subscription_StartFromEnd_SkipsHistory()
    {
        var storage = new InMemoryEventStorage();
        await storage.AppendAsync("old-1", ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), "bank.opened", "{\"owner\":\"old\"}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("live", (e, ct) => recorder.RecordAsync(e, ct), o => o.StartFrom = SubscriptionStartPosition.End));
        await host.Subscriptions().WaitForPositionAsync("live", 1).WaitAsync(TestHost.Wait);

        var result = await host.Store().AppendAsync("new-1", ExpectedVersion.NoStream, new AccountOpened("new"));
        await host.Subscriptions().WaitForPositionAsync("live", result.LastPosition).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Data).Should().Equal(new AccountOpened("new"));
    }

    [Fact]
    public async Task Subscription_HandlerType_ResolvedFromANewScopePerEvent()
    {
        var recorder = new Recorder();
        var before = ScopedCountingHandler.Instances;
        using var host = await TestHost.StartAsync(b =>
        {
            b.Services.AddSingleton(recorder);
            b.Services.AddScoped(sp => new ScopedCountingHandler(sp.GetRequiredService<Recorder>()));
            b.AddEventSourcing(es => es.AddEvent<AccountOpened>().AddSubscription<ScopedCountingHandler>("scoped"));
        }, new FakeTimeProvider(), harness: false);
        var result = await host.Services.GetRequiredService<IEventStore>().AppendAsync("a", ExpectedVersion.NoStream, [new AccountOpened("a"), new AccountOpened("b")]);

        await host.Services.GetRequiredService<IEventSubscriptions>().WaitForPositionAsync("scoped", result.LastPosition).WaitAsync(TestHost.Wait);

        recorder.Events.Should().HaveCount(2);
        (ScopedCountingHandler.Instances - before).Should().BeGreaterThanOrEqualTo(2);
    }

    [Fact]
    public async Task Subscription_HostStopsWhileHandling_HandlerCancelledAtTheDeadlineAndCheckpointStaysBeforeItsEvent()
    {
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("slow", async (e, ct) =>
        {
            if (e.Version == 2)
            {
                entered.TrySetResult();
                await new TaskCompletionSource().Task.WaitAsync(ct);
            }
        }, o => o.Retry = null), time);
        await host.Store().AppendAsync("a", ExpectedVersion.NoStream, [new AccountOpened("a"), new Deposited(1m), new Deposited(2m)]);
        await entered.Task.WaitAsync(TestHost.Wait);

        var stopping = host.StopAsync();
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(30));
        await stopping.WaitAsync(TestHost.Wait);
        host.Dispose();

        (await ((ICheckpointStore)storage).LoadAsync("slow")).Should().Be(1);
        var recorder = new Recorder();
        using var restarted = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("slow", (e, ct) => recorder.RecordAsync(e, ct)));
        await restarted.Subscriptions().WaitForPositionAsync("slow", 3).WaitAsync(TestHost.Wait);
        recorder.Events.Select(e => e.Version).Should().Equal(2, 3);
    }

    [Fact]
    public async Task Start_InvalidSubscriptions_FailsListingEveryProblem()
    {
        using var host = TestHost.Build(b => b.AddEventSourcing(es => es
            .AddSubscription("dup", (_, _) => ValueTask.CompletedTask)
            .AddProjection("dup", (_, _, _) => ValueTask.CompletedTask)
            .AddSubscription("bad", (_, _) => ValueTask.CompletedTask, o => { o.BatchSize = 0; o.StreamId = "s"; o.StreamPrefix = "p"; o.AttemptTimeout = TimeSpan.Zero; })
            .AddSubscription(" ", (_, _) => ValueTask.CompletedTask)), harness: false);

        var act = () => host.StartAsync();

        var thrown = await act.Should().ThrowAsync<OptionsValidationException>();
        thrown.Which.Failures.Should().Contain(f => f.Contains("'dup'") && f.Contains("must be unique"))
            .And.Contain(f => f.Contains("'bad'") && f.Contains("BatchSize"))
            .And.Contain(f => f.Contains("'bad'") && f.Contains("cannot be combined with StreamPrefix"))
            .And.Contain(f => f.Contains("'bad'") && f.Contains("AttemptTimeout"))
            .And.Contain(f => f.Contains("empty name"));
    }

    [Fact]
    public async Task Subscription_SixteenConcurrentWriters_EveryEventHandledOnceInPositionOrder()
    {
        var recorder = new Recorder();
        using var host = await EventSourcingHost.StartAsync(es => es.AddSubscription("tail", (e, ct) => recorder.RecordAsync(e, ct), o => o.BatchSize = 7));
        var store = host.Store();

        await Task.WhenAll(Enumerable.Range(0, 16).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < 50; i++)
            {
                await store.AppendAsync($"account-{w}", ExpectedVersion.Any, [new Deposited(i), new Deposited(-i)]);
            }
        }))).WaitAsync(TestHost.Wait);
        await host.Subscriptions().WaitForPositionAsync("tail", 16 * 50 * 2).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Position).Should().Equal(Enumerable.Range(1, 1600).Select(i => (long)i));
    }

    [Fact]
    public async Task GetStatus_UnknownName_ThrowsArgumentException()
    {
        using var host = await EventSourcingHost.StartAsync(_ => { });

        var act = () => host.Subscriptions().GetStatus("nope");

        act.Should().Throw<ArgumentException>().WithMessage("*'nope'*");
        host.Subscriptions().GetStatuses().Should().BeEmpty();
    }

    [Fact]
    public async Task Subscription_HostStopsWhileHandling_EventInHandFinishesBeforeTheDeadline()
    {
        var storage = new InMemoryEventStorage();
        var logs = new LogCapture();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = new Recorder();
        var host = await TestHost.StartAsync(b =>
        {
            b.Logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug);
            b.AddEventSourcing(es => es.UseStorage(_ => storage).AddEvent<AccountOpened>().AddEvent<Deposited>().AddSubscription("mailer", async (e, ct) =>
            {
                if (e.Version == 2)
                {
                    ct.Register(() => cancelled.TrySetResult());
                    entered.TrySetResult();
                    await release.Task.WaitAsync(ct);
                }

                await first.RecordAsync(e, ct);
            }, o => o.Retry = null));
        }, new FakeTimeProvider(), harness: false);
        await host.Store().AppendAsync("a", ExpectedVersion.NoStream, [new AccountOpened("a"), new Deposited(1m), new Deposited(2m)]);
        await entered.Task.WaitAsync(TestHost.Wait);

        var stopping = host.StopAsync();
        await Task.WhenAny(logs.WaitForAsync(4015), cancelled.Task).WaitAsync(TestHost.Wait);
        release.SetResult();
        await stopping.WaitAsync(TestHost.Wait);
        host.Dispose();

        first.Events.Select(e => e.Version).Should().StartWith([1, 2], "the host drains the event in hand instead of cancelling it");
        var checkpoint = await ((ICheckpointStore)storage).LoadAsync("mailer");
        checkpoint.Should().Be(first.Events[^1].Position, "the checkpoint covers every event that was finished");
        var second = new Recorder();
        using var restarted = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("mailer", (e, ct) => second.RecordAsync(e, ct)));
        await restarted.Subscriptions().WaitForPositionAsync("mailer", 3).WaitAsync(TestHost.Wait);
        first.Events.Concat(second.Events).Select(e => e.Version).Should().Equal(1, 2, 3);
    }

    [Fact]
    public async Task Subscription_ParkModeHandlerFailsBecauseTheHostStopped_EventIsNotParkedAndIsDeliveredAgain()
    {
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("webhook", async (e, ct) =>
        {
            if (e.Version == 2)
            {
                entered.TrySetResult();
                try
                {
                    await new TaskCompletionSource().Task.WaitAsync(ct);
                }
                catch (OperationCanceledException ex)
                {
                    // A client library that reports cancellation as its own error.
                    throw new InvalidOperationException("The webhook call was aborted.", ex);
                }
            }
        }, o => { o.OnFailure = SubscriptionFailureMode.Park; o.Retry = null; }), time);
        await host.Store().AppendAsync("a", ExpectedVersion.NoStream, [new AccountOpened("a"), new Deposited(1m), new Deposited(2m)]);
        await entered.Task.WaitAsync(TestHost.Wait);

        var stopping = host.StopAsync();
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(30));
        await stopping.WaitAsync(TestHost.Wait);
        (await host.Subscriptions().GetParkedEventsAsync("webhook").CollectAsync()).Should().BeEmpty("being stopped is not a failure of the event");
        host.Dispose();

        (await ((ICheckpointStore)storage).LoadAsync("webhook")).Should().Be(1);
        var recorder = new Recorder();
        using var restarted = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("webhook", (e, ct) => recorder.RecordAsync(e, ct)));
        await restarted.Subscriptions().WaitForPositionAsync("webhook", 3).WaitAsync(TestHost.Wait);
        recorder.Events.Select(e => e.Version).Should().Equal(2, 3);
    }

    [Fact]
    public async Task Subscription_StartFromEnd_RestartResumesWhereItFirstStartedNotAtTheNewEnd()
    {
        var storage = new InMemoryEventStorage();
        await storage.AppendAsync("old-1", ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), "bank.opened", "{\"owner\":\"old\"}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);
        using (var first = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("live", (_, _) => ValueTask.CompletedTask, o => o.StartFrom = SubscriptionStartPosition.End)))
        {
            await first.Subscriptions().WaitForPositionAsync("live", 1).WaitAsync(TestHost.Wait);
            await first.StopAsync();
        }

        // Appended while the application is down.
        await storage.AppendAsync("new-1", ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), "bank.opened", "{\"owner\":\"new\"}"u8.ToArray(), DateTimeOffset.UnixEpoch)]);
        var recorder = new Recorder();
        using var restarted = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => storage).AddSubscription("live", (e, ct) => recorder.RecordAsync(e, ct), o => o.StartFrom = SubscriptionStartPosition.End));
        await restarted.Subscriptions().WaitForPositionAsync("live", 2).WaitAsync(TestHost.Wait);

        recorder.Events.Select(e => e.Data).Should().Equal(new AccountOpened("new"));
    }

    [Fact]
    public async Task Subscription_RestartedAfterARunWasAbandoned_NewRunWaitsForItInsteadOfHandlingSideBySide()
    {
        var storage = new InMemoryEventStorage();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var logs = new LogCapture();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var enteredAgain = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseStuck = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var calls = new Recorder();
        var secondCalls = 0;
        using var host = await TestHost.StartAsync(b =>
        {
            b.Logging.AddProvider(logs);
            b.AddEventSourcing(es => es.UseStorage(_ => storage).AddEvent<AccountOpened>().AddEvent<Deposited>().AddSubscription("stubborn", async (e, _) =>
            {
                await calls.RecordAsync(e);
                if (e.Version == 2)
                {
                    if (!entered.TrySetResult())
                    {
                        Interlocked.Increment(ref secondCalls);
                        enteredAgain.TrySetResult();
                        return;
                    }

                    // Ignores cancellation: the only way to end it is to release it.
                    await releaseStuck.Task;
                }
            }, o => o.Retry = null));
        }, time, harness: false);
        var subscriptions = host.Services.GetRequiredService<IEventSubscriptions>();
        await host.Services.GetRequiredService<IEventStore>().AppendAsync("a", ExpectedVersion.NoStream, [new AccountOpened("a"), new Deposited(1m), new Deposited(2m)]);
        await entered.Task.WaitAsync(TestHost.Wait);

        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5), time))
        {
            var restart = subscriptions.RestartAsync("stubborn", deadline.Token);
            fake.Advance(TimeSpan.FromSeconds(5));
            await FluentActions.Awaiting(() => restart.WaitAsync(TestHost.Wait)).Should().ThrowAsync<OperationCanceledException>();
        }

        await subscriptions.RestartAsync("stubborn").WaitAsync(TestHost.Wait);
        await Task.WhenAny(logs.WaitForAsync(4014), enteredAgain.Task).WaitAsync(TestHost.Wait);
        releaseStuck.SetResult();
        await subscriptions.WaitForPositionAsync("stubborn", 3).WaitAsync(TestHost.Wait);

        Volatile.Read(ref secondCalls).Should().Be(0, "the new run starts only after the abandoned one ended and saved its checkpoint");
        calls.Events.Select(e => e.Version).Should().Equal(1, 2, 3);
    }

    [Fact]
    public async Task Subscription_StoreReportsTheStopsCancellationAsItsOwnError_StopsWithoutAFault()
    {
        var storage = new InMemoryEventStorage();
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var events = new DelegatingEventStorage(storage)
        {
            // A driver that turns a cancelled wait into its own exception type.
            OnWaitForEvents = async (after, ct) =>
            {
                waiting.TrySetResult();
                try
                {
                    await storage.WaitForEventsAsync(after, ct);
                }
                catch (OperationCanceledException ex)
                {
                    throw new InvalidOperationException("The connection was closed while waiting for a notification.", ex);
                }
            },
        };
        var fixture = new Patterns.Conformance.EventStoreFixture(events, storage, storage, storage, storage);
        var host = await EventSourcingHost.StartAsync(es => es.UseStorage(_ => fixture.AsSingleStore()).AddSubscription("audit", (_, _) => ValueTask.CompletedTask));
        await waiting.Task.WaitAsync(TestHost.Wait);

        await host.StopAsync().WaitAsync(TestHost.Wait);

        var status = host.Subscriptions().GetStatus("audit");
        status.State.Should().Be(SubscriptionState.Stopped);
        status.Error.Should().BeNull();
        host.Dispose();
    }
}
