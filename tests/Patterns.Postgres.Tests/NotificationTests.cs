using Microsoft.Extensions.Time.Testing;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Postgres.Tests;

/// <summary>
/// <see cref="PostgresEventStore.WaitForEventsAsync"/>: woken by LISTEN/NOTIFY across store instances (as across
/// processes), by the store's own appends, and otherwise by the poll interval on the store's clock. The waiting
/// stores run on a manual clock, so a poll can only happen when a test advances it.
/// </summary>
public sealed class NotificationTests : PostgresTestBase
{
    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task WaitForEventsAsync_AppendByAnotherInstance_WakesTheWaiterThroughNotify()
    {
        var writer = CreateSut();
        await writer.MigrateAsync();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var waiter = CreateSut(o => o.PollInterval = Poll, time);
        var listening = waiter.Listener.NextConnection;

        var wait = waiter.WaitForEventsAsync(0, CancellationToken.None).AsTask();
        await listening.WaitAsync(PostgresDatabase.Wait);
        wait.IsCompleted.Should().BeFalse("nothing was appended and the clock has not moved");
        var appended = await writer.AppendAsync("s", ExpectedVersion.NoStream, [TestEvents.One()]);

        await wait.WaitAsync(PostgresDatabase.Wait);
        waiter.Listener.KnownHead.Should().Be(appended.LastPosition, "the notification carries the last committed position");
        time.PendingTimers.Should().Be(0, "the poll timer was cancelled, not fired");
    }

    [Fact]
    public async Task WaitForEventsAsync_WhileListening_EveryLaterAppendByAnotherInstanceWakesTheWaiter()
    {
        // After the first wait read the head while the connection listened, later waits rely on notifications alone.
        var writer = CreateSut();
        await writer.MigrateAsync();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var waiter = CreateSut(o => o.PollInterval = Poll, time);
        var listening = waiter.Listener.NextConnection;
        var first = waiter.WaitForEventsAsync(0, CancellationToken.None).AsTask();
        await listening.WaitAsync(PostgresDatabase.Wait);
        var appended = await writer.AppendAsync("s", ExpectedVersion.NoStream, [TestEvents.One()]);
        await first.WaitAsync(PostgresDatabase.Wait);

        for (var i = 0; i < 3; i++)
        {
            var wait = waiter.WaitForEventsAsync(appended.LastPosition, CancellationToken.None).AsTask();
            await time.WaitForPendingTimersAsync(1).WaitAsync(PostgresDatabase.Wait);
            wait.IsCompleted.Should().BeFalse("nothing was appended after the position and the clock has not moved");
            appended = await writer.AppendAsync("s", ExpectedVersion.Any, [TestEvents.One()]);

            await wait.WaitAsync(PostgresDatabase.Wait);
            waiter.Listener.KnownHead.Should().Be(appended.LastPosition);
        }

        time.PendingTimers.Should().Be(0, "each poll timer was cancelled, not fired");
    }

    [Fact]
    public async Task Listener_OwnAppendsNotification_WakesNobody()
    {
        // The store wakes its waiters itself when it commits; the notification of the same commit that reaches its own
        // listener afterwards announces nothing new, so it must not wake them (each wake costs the waiter a read).
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var store = CreateSut(o => o.PollInterval = Poll, time);
        await store.MigrateAsync();
        var listening = store.Listener.NextConnection;
        store.Listener.EnsureStarted();
        await listening.WaitAsync(PostgresDatabase.Wait);

        for (var i = 0; i < 3; i++)
        {
            var heard = store.Listener.NextNotification;
            var appended = await store.AppendAsync("own", ExpectedVersion.Any, [TestEvents.One()]);
            var next = store.Listener.NextSignal;
            await heard.WaitAsync(PostgresDatabase.Wait);

            store.Listener.KnownHead.Should().Be(appended.LastPosition);
            next.IsCompleted.Should().BeFalse("the notification of this store's own append was no news");
        }
    }

    [Fact]
    public async Task WaitForEventsAsync_NotificationsOff_ReturnsAfterThePollInterval()
    {
        var writer = CreateSut();
        await writer.MigrateAsync();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var waiter = CreateSut(o => { o.PollInterval = Poll; o.Notifications = false; }, time);

        var wait = waiter.WaitForEventsAsync(0, CancellationToken.None).AsTask();
        await time.WaitForPendingTimersAsync(1).WaitAsync(PostgresDatabase.Wait);
        await writer.AppendAsync("s", ExpectedVersion.NoStream, [TestEvents.One()]);
        wait.IsCompleted.Should().BeFalse("another instance's append reaches this one only by polling");

        fake.Advance(Poll);

        await wait.WaitAsync(PostgresDatabase.Wait);
        (await waiter.ReadAllAsync().ToListAsync()).Should().ContainSingle();
        waiter.Listener.ProcessId.Should().Be(0, "no listening connection was opened");
    }

    [Fact]
    public async Task WaitForEventsAsync_OwnAppend_WakesAtOnceWithoutNotify()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var store = CreateSut(o => { o.PollInterval = Poll; o.Notifications = false; }, time);
        await store.MigrateAsync();

        var wait = store.WaitForEventsAsync(0, CancellationToken.None).AsTask();
        await time.WaitForPendingTimersAsync(1).WaitAsync(PostgresDatabase.Wait);
        await store.AppendAsync("s", ExpectedVersion.NoStream, [TestEvents.One()]);

        await wait.WaitAsync(PostgresDatabase.Wait);
    }

    [Fact]
    public async Task WaitForEventsAsync_EventsAlreadyPastThePosition_ReturnsAtOnce()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var store = CreateSut(o => o.PollInterval = Poll, time);
        var appended = await store.AppendAsync("s", ExpectedVersion.NoStream, TestEvents.Many(2));

        await store.WaitForEventsAsync(appended.FirstPosition, CancellationToken.None).AsTask().WaitAsync(PostgresDatabase.Wait);

        time.PendingTimers.Should().Be(0);
    }

    [Fact]
    public async Task WaitForEventsAsync_AtTheHeadAfterAHardDeletedTail_WaitsInsteadOfSpinning()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var store = CreateSut(o => { o.PollInterval = Poll; o.Notifications = false; }, time);
        await store.AppendAsync("kept", ExpectedVersion.NoStream, [TestEvents.One()]);
        var deleted = await store.AppendAsync("gone", ExpectedVersion.NoStream, TestEvents.Many(3));
        await store.DeleteStreamAsync("gone", ExpectedVersion.Any, StreamDeleteMode.Hard);

        var head = await store.GetHeadPositionAsync();
        head.Should().Be(deleted.LastPosition, "hard-deleted positions are never given out again");
        var wait = store.WaitForEventsAsync(head, CancellationToken.None).AsTask();
        await time.WaitForPendingTimersAsync(1).WaitAsync(PostgresDatabase.Wait);
        wait.IsCompleted.Should().BeFalse();

        fake.Advance(Poll);
        await wait.WaitAsync(PostgresDatabase.Wait);
        (await store.AppendAsync("next", ExpectedVersion.NoStream, [TestEvents.One()])).FirstPosition.Should().Be(head + 1);
    }

    [Fact]
    public async Task WaitForEventsAsync_HeadAlreadyPastThePositionInAnotherInstance_ReturnsAtOnce()
    {
        var writer = CreateSut();
        await writer.AppendAsync("s", ExpectedVersion.NoStream, TestEvents.Many(2));
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var reader = CreateSut(o => { o.PollInterval = Poll; o.Notifications = false; }, time);

        await reader.WaitForEventsAsync(1, CancellationToken.None).AsTask().WaitAsync(PostgresDatabase.Wait);

        time.PendingTimers.Should().Be(0);
    }

    [Fact]
    public async Task WaitForEventsAsync_Cancelled_Throws()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var store = CreateSut(o => o.PollInterval = Poll, time);
        await store.MigrateAsync();
        using var cancel = new CancellationTokenSource();

        var wait = store.WaitForEventsAsync(0, cancel.Token).AsTask();
        await cancel.CancelAsync();

        await wait.Invoking(w => w.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<OperationCanceledException>();
    }

    [Fact]
    public async Task Listener_ConnectionTerminated_ReconnectsAfterTheDelayAndWakesWaitersAgain()
    {
        var writer = CreateSut();
        await writer.MigrateAsync();
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var waiter = CreateSut(o => o.PollInterval = Poll, time);
        var first = waiter.Listener.NextConnection;
        var initial = waiter.WaitForEventsAsync(0, CancellationToken.None).AsTask();
        await first.WaitAsync(PostgresDatabase.Wait);
        await writer.AppendAsync("s", ExpectedVersion.NoStream, [TestEvents.One()]);
        await initial.WaitAsync(PostgresDatabase.Wait);
        var killed = waiter.Listener.ProcessId;

        var reconnected = waiter.Listener.NextConnection;
        (await PostgresDatabase.ScalarAsync<bool>($"SELECT pg_terminate_backend({killed})")).Should().BeTrue();
        await time.WaitForPendingTimersAsync(1).WaitAsync(PostgresDatabase.Wait); // the reconnect delay
        reconnected.IsCompleted.Should().BeFalse("the listener waits for its reconnect delay on the store's clock");
        fake.Advance(Poll);
        await reconnected.WaitAsync(PostgresDatabase.Wait);
        waiter.Listener.ProcessId.Should().NotBe(killed);

        var head = await waiter.GetHeadPositionAsync();
        var wait = waiter.WaitForEventsAsync(head, CancellationToken.None).AsTask();
        await writer.AppendAsync("s", ExpectedVersion.Any, [TestEvents.One()]);
        await wait.WaitAsync(PostgresDatabase.Wait);
    }
}
