using System.Diagnostics;
using System.Globalization;
using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.Outbox;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

/// <summary>
/// Process-kill tests of async projections on a durable store: real child processes (Patterns.CrashHost) run the
/// <see cref="KillProjection"/> fold and append deposits, and are killed with SIGKILL at random points (after a random
/// number of acknowledged appends, from a seeded <see cref="Random"/>; the seed is in every failure message). At the
/// end a host in the test process catches up and every account's total must be exactly the sum of its deposits in the
/// log: no event folded twice, none missed. Each case reuses one database (file or schema) across its iterations.
/// </summary>
/// <remarks>
/// <c>PATTERNS_KILL_ITERATIONS</c> sets the iterations per case (default 20) and <c>PATTERNS_KILL_SEED</c> replays a
/// seed; <c>scripts/soak.sh</c> runs these tests with many iterations.
/// </remarks>
public abstract class ProcessKillTests : IAsyncLifetime
{
    /// <summary>How long one wait on a child may take: a child's start on a loaded machine, or a lease takeover.</summary>
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(60);

    private readonly CancellationTokenSource _timeout = new();

    /// <summary>Gets the iterations per case: <c>PATTERNS_KILL_ITERATIONS</c>, or 20.</summary>
    protected static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_ITERATIONS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 20;

    /// <summary>Gets the store kind the child takes as its first argument (<c>sqlite</c> or <c>postgres</c>).</summary>
    protected abstract string StoreKind { get; }

    /// <summary>Gets a token cancelled when the case has run too long (two minutes plus 20 seconds an iteration).</summary>
    protected CancellationToken Timeout => _timeout.Token;

    /// <inheritdoc />
    public virtual ValueTask InitializeAsync()
    {
        _timeout.CancelAfter(TimeSpan.FromMinutes(2) + (Iterations * TimeSpan.FromSeconds(20)));
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public virtual ValueTask DisposeAsync()
    {
        _timeout.Dispose();
        GC.SuppressFinalize(this);
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// One process at a time runs the projection and appends; it is killed at a random point (after a random number of
    /// acknowledged appends, mostly once it holds the projection's lease, sometimes before) and the next iteration starts
    /// a new one on the same database, which takes over once the dead one's lease expires.
    /// </summary>
    /// <returns>A task that completes when the test has run.</returns>
    [Fact]
    public async Task Kill_FoldProjectionKilledAtRandomPoints_FoldsEveryEventExactlyOnce()
    {
        var seed = NewSeed();
        var random = new Random(seed);
        var target = await CreateDatabaseAsync("fold");
        var acknowledged = new List<KillAck>();
        var owned = 0;
        var watch = Stopwatch.StartNew();

        // Each child is started (gated) while the one before it runs, and let go once that one is dead.
        KillChild? next = StartChild($"child 0 (seed {seed})", target, random.Next());
        try
        {
            for (var i = 0; i < Iterations; i++)
            {
                var child = next ?? StartChild($"child {i} (seed {seed})", target, random.Next());
                next = null;
                try
                {
                    await child.GoAsync(StepTimeout, Timeout);
                    next = i + 1 < Iterations ? StartChild($"child {i + 1} (seed {seed})", target, random.Next()) : null;
                    if (random.Next(4) != 0)
                    {
                        await KillChild.WaitUntilAsync([child], () => child.IsOwner, $"{child.Name} to take the projection's lease", StepTimeout, Timeout);
                        owned++;
                    }

                    await child.WaitForAcksAsync(child.AckCount + random.Next(1, 40), StepTimeout, Timeout);
                    child.Kill();
                }
                catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
                {
                    throw new InvalidOperationException($"Iteration {i}, seed {seed}: {ex.Message}", ex);
                }
                finally
                {
                    await child.DisposeAsync();
                    acknowledged.AddRange(child.Acknowledged);
                }
            }
        }
        finally
        {
            if (next is not null)
            {
                await next.DisposeAsync();
            }
        }

        owned.Should().BeGreaterThan(0, $"seed {seed}: most children are killed while they run the projection");
        await VerifyTotalsAsync(target, acknowledged, seed, $"{Iterations} kills in {watch.Elapsed}");
    }

    /// <summary>
    /// Two processes run the same projection on one database; both append. The one that owns the projection is killed
    /// at a random point; the other, on standby until then, must take over, and a new process replaces the dead one as
    /// the next standby. Because the fold is not idempotent, an event the two handled both would show in the totals.
    /// </summary>
    /// <returns>A task that completes when the test has run.</returns>
    [Fact]
    public async Task Kill_OwnerOfASharedProjection_StandbyTakesOverAndFoldsEveryEventExactlyOnce()
    {
        var seed = NewSeed();
        var random = new Random(seed);
        var target = await CreateDatabaseAsync("shared");
        var acknowledged = new List<KillAck>();
        var watch = Stopwatch.StartNew();
        var started = 0;
        await using (var pair = await KillPair.StartAsync(() => StartChild($"child {started++} (seed {seed})", target, random.Next()), acknowledged, Timeout))
        {
            var children = pair.Children;

            // The kill point is counted in the owner's acknowledgements since it took over, so that the wait for it
            // overlaps the replacement's start.
            var ownerSince = 0;
            for (var i = 0; i < Iterations; i++)
            {
                var killAfter = ownerSince + random.Next(1, 30);
                KillChild? found = null;
                await KillChild.WaitUntilAsync(
                    children,
                    () =>
                    {
                        // One snapshot of the states: the children's output moves them while this reads.
                        var states = children.Select(c => (Child: c, c.State)).ToList();
                        var owners = states.Where(s => s.State is SubscriptionState.CatchingUp or SubscriptionState.Live).ToList();
                        found = owners.Count == 1 && states.Count(s => s.State == SubscriptionState.Standby) == 1 && owners[0].Child.AckCount >= killAfter
                            ? owners[0].Child
                            : null;
                        return found is not null;
                    },
                    $"iteration {i}, seed {seed}: one process to own the projection, the other to stand by, and the owner to acknowledge {killAfter} appends",
                    StepTimeout,
                    Timeout);
                var owner = found ?? throw new InvalidOperationException("The wait ended without an owner.");
                var standby = await pair.KillAsync(owner);

                // The replacement starts only once the standby has taken over, or it could win the lease instead.
                await pair.WaitForTakeOverAsync(standby, $"iteration {i}, seed {seed}: {standby.Name} to take over from {owner.Name}, killed");
                ownerSince = standby.AckCount;
                await pair.ReplaceAsync();
            }
        }

        await VerifyTotalsAsync(target, acknowledged, seed, $"{Iterations} takeovers in {watch.Elapsed}");
    }

    /// <summary>
    /// Children commit store sessions that append an event and send a message through the outbox (their relay does not
    /// run, so every message leaves through the store), and are killed at random points. A relay started afterwards
    /// must send every message whose commit a child acknowledged, at least once, and never one from a commit that failed.
    /// </summary>
    /// <returns>A task that completes when the test has run.</returns>
    [Fact]
    public async Task Kill_OutboxWritersKilledAtRandomPoints_EveryCommittedMessageIsSentAndNoneFromAFailedCommit()
    {
        var seed = NewSeed();
        var random = new Random(seed);
        var target = await CreateDatabaseAsync("outbox");
        var acknowledged = new List<KillAck>();
        for (var i = 0; i < Iterations; i++)
        {
            var child = KillChild.Start($"outbox child {i} (seed {seed})", StoreKind, target, "outbox", random.Next().ToString(CultureInfo.InvariantCulture));
            try
            {
                await child.WaitForAcksAsync(random.Next(1, 30), StepTimeout, Timeout);
                child.Kill();
            }
            catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
            {
                throw new InvalidOperationException($"Iteration {i}, seed {seed}: {ex.Message}", ex);
            }
            finally
            {
                await child.DisposeAsync();
                acknowledged.AddRange(child.Acknowledged);
            }
        }

        var received = new System.Collections.Concurrent.ConcurrentDictionary<Guid, long>();
        var services = new ServiceCollection();
        services.AddEventSourcing(es =>
        {
            UseStore(es, target);
            KillProjection.Configure(es);
        });
        services.AddOutbox();
        services.AddMessageQueue(q => q.AddQueue(KillProjection.OutboxQueue).AddConsumer<KillDeposit>(KillProjection.OutboxQueue, (m, context, _) =>
        {
            received[context.MessageId] = m.Amount;
            return default;
        }));
        await using var provider = services.BuildServiceProvider();
        var pending = (await provider.GetRequiredService<IOutboxStore>().ReadOutboxAsync(0, int.MaxValue, Timeout)).Count;
        await using var running = await HostedServices.StartAsync(provider, Timeout);
        acknowledged.Should().NotBeEmpty($"seed {seed}: the children committed before they were killed");
        pending.Should().BeGreaterThanOrEqualTo(acknowledged.Count, $"seed {seed}: every acknowledged commit left its message in the outbox");
        using (var drained = CancellationTokenSource.CreateLinkedTokenSource(Timeout))
        {
            drained.CancelAfter(StepTimeout);
            while (received.Count < pending)
            {
                drained.Token.ThrowIfCancellationRequested();
                await Task.Yield();
            }
        }

        foreach (var ack in acknowledged)
        {
            var id = Guid.ParseExact(ack.StreamId["kill-outbox-".Length..], "N");
            received.Should().ContainKey(id, $"seed {seed}: a message whose commit was acknowledged is sent");
            received[id].Should().Be(ack.Sum, $"seed {seed}: the message sent is the one committed");
        }

        received.Values.Should().NotContain(-1, $"seed {seed}: a message from a failed commit is never sent");
        (await provider.GetRequiredService<IEventStore>().GetStreamStateAsync("kill-outbox-conflict", Timeout)).Exists.Should().BeFalse(
            $"seed {seed}: the failed commits stored nothing");
    }

    /// <summary>
    /// Two processes share the store and RabbitMQ (the broker at PATTERNS_RABBITMQ); both commit store sessions that
    /// append an event and send a message through the outbox, and both run the relay, which one at a time owns (the
    /// <c>outbox-relay</c> lease, 1 second). The owner is killed at a random point, with committed messages pending (its
    /// own not yet handed over, and the other's, which wait for a relay until the takeover); the other must take the
    /// lease over once it expires and hand every pending message over, and a new process replaces the dead one. A
    /// consumer in this process, which is never killed, records each arrival and claims the message in its inbox with
    /// one event per message in the same unit of work. Every committed message must arrive at least once (a kill between
    /// a hand-over and its removal sends it again) and take effect exactly once; none from a failed commit arrives.
    /// </summary>
    /// <returns>A task that completes when the test has run.</returns>
    [Fact]
    public async Task Kill_OutboxRelayOwnerKilledWithMessagesPending_OtherProcessTakesOverAndEveryCommittedMessageTakesEffectOnce()
    {
        var broker = Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";
        var seed = NewSeed();
        var random = new Random(seed);
        var target = await CreateDatabaseAsync("relay");
        var queue = KillRelay.Queue(target);
        var arrivals = new System.Collections.Concurrent.ConcurrentDictionary<Guid, int>();
        var amounts = new System.Collections.Concurrent.ConcurrentDictionary<Guid, long>();
        var duplicates = 0;
        var settled = 0;
        var consumed = new Pulse();
        var services = new ServiceCollection();
        services.AddEventSourcing(es =>
        {
            UseStore(es, target);
            es.AddEvent<KillDeposit>();
        });
        services.AddPatterns(p => p.UseRabbitMq(broker));

        // This process only consumes: its relay does not run until the children are gone.
        services.AddOutbox(o => o.RunRelay = false);
        services.AddMessageQueue(q => q.AddQueue(queue).AddConsumer<KillDeposit>(queue, async (m, context, ct) =>
        {
            arrivals.AddOrUpdate(context.MessageId, 1, static (_, n) => n + 1);
            amounts[context.MessageId] = m.Amount;
            try
            {
                var session = context.Services.GetRequiredService<IStoreSession>();
                session.Handles(context);
                session.Append(KillRelay.ReceivedStream(context.MessageId), ExpectedVersion.Any, [new EventData(m)]);
                await session.CommitAsync(ct);
            }
            catch (DuplicateMessageException)
            {
                Interlocked.Increment(ref duplicates);
            }
            finally
            {
                // A commit that failed otherwise is delivered again, and counted again among the arrivals.
                Interlocked.Increment(ref settled);
                consumed.Signal();
            }
        }));
        await using var provider = services.BuildServiceProvider();
        HostedServices consuming;
        try
        {
            consuming = await HostedServices.StartAsync(provider, Timeout);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Assert.Skip($"RabbitMQ is not reachable at {WithoutCredentials(broker)} (PATTERNS_RABBITMQ): {ex.Message}");
            throw;
        }

        var acknowledged = new List<KillAck>();
        var pendingAtKills = 0;
        var watch = Stopwatch.StartNew();
        await using (consuming)
        {
            var started = 0;
            await using (var pair = await KillPair.StartAsync(
                () => KillChild.Start($"relay child {started++} (seed {seed})", StoreKind, target, "relay", random.Next().ToString(CultureInfo.InvariantCulture), "gated"),
                acknowledged,
                Timeout))
            {
                var children = pair.Children;
                var outbox = provider.GetRequiredService<IOutboxStore>();
                for (var i = 0; i < Iterations; i++)
                {
                    // The kill point is counted in the owner's commits since the iteration began.
                    var killAfter = random.Next(1, 40);
                    var since = children.ToDictionary(c => c, c => c.AckCount);
                    KillChild? found = null;
                    await KillChild.WaitUntilAsync(
                        children,
                        () =>
                        {
                            var owners = children.Where(c => c.IsOwner).ToList();
                            found = owners.Count == 1 && owners[0].AckCount >= since[owners[0]] + killAfter ? owners[0] : null;
                            return found is not null;
                        },
                        $"iteration {i}, seed {seed}: one process to own the relay and commit {killAfter} more messages",
                        StepTimeout,
                        Timeout);
                    var owner = found ?? throw new InvalidOperationException("The wait ended without an owner.");
                    var standby = await pair.KillAsync(owner);
                    pendingAtKills += (await outbox.ReadOutboxAsync(0, int.MaxValue, Timeout)).Count;

                    // The standby takes the lease once the dead owner's expires, and hands over what the dead one left.
                    await pair.WaitForTakeOverAsync(standby, $"iteration {i}, seed {seed}: {standby.Name} to take the relay over from {owner.Name}, killed");
                    var left = owner.Acknowledged.Select(Id).ToList();
                    await consumed.WaitUntilAsync(
                        () => left.All(arrivals.ContainsKey),
                        () => $"iteration {i}, seed {seed}: the messages {owner.Name} committed to arrive through {standby.Name}'s relay; missing: {string.Join(", ", left.Where(id => !arrivals.ContainsKey(id)).Take(10))}", Timeout);
                    await pair.ReplaceAsync();
                }
            }

            // The children are gone: a relay in this process takes over last and sends what they left.
            var drain = new ServiceCollection();
            drain.AddEventSourcing(es =>
            {
                UseStore(es, target);
                es.AddEvent<KillDeposit>();
            });
            drain.AddPatterns(p => p.UseRabbitMq(broker));
            drain.AddMessageQueue(q => q.AddQueue(queue));
            drain.AddOutbox(o => o.LeaseDuration = KillProjection.LeaseDuration);
            await using var drainProvider = drain.BuildServiceProvider();
            await using (await HostedServices.StartAsync(drainProvider, Timeout))
            {
                var expected = acknowledged.Select(Id).ToList();
                await consumed.WaitUntilAsync(
                    () => expected.All(arrivals.ContainsKey),
                    () => $"seed {seed}: every acknowledged message to arrive; missing {expected.Count(id => !arrivals.ContainsKey(id))} of {expected.Count}", Timeout);
            }

            // The consumer settles what arrived last.
            await consumed.WaitUntilAsync(
                () => Volatile.Read(ref settled) >= arrivals.Values.Sum(),
                () => $"seed {seed}: the consumer to settle every arrival", Timeout);
        }

        acknowledged.Should().NotBeEmpty($"seed {seed}: the children committed before they were killed");
        pendingAtKills.Should().BeGreaterThan(0, $"seed {seed}: committed messages were pending in the outbox when owners were killed");
        amounts.Values.Should().NotContain(-1, $"seed {seed}: a message from a failed commit is never sent");
        foreach (var ack in acknowledged)
        {
            arrivals.Should().ContainKey(Id(ack), $"seed {seed}: a message whose commit was acknowledged arrives at least once");
            amounts[Id(ack)].Should().Be(ack.Sum, $"seed {seed}: the message that arrives is the one committed");
        }

        var effects = new Dictionary<string, int>();
        await foreach (var e in provider.GetRequiredService<IEventStorage>().ReadAllAsync(0, new EventFilter { StreamPrefix = KillRelay.ReceivedPrefix }, long.MaxValue, Timeout))
        {
            effects[e.StreamId] = effects.GetValueOrDefault(e.StreamId) + 1;
        }

        effects.Should().HaveCount(arrivals.Count, $"seed {seed}: every message that arrived took effect ({arrivals.Values.Sum()} arrivals, {Volatile.Read(ref duplicates)} refused by the inbox, in {watch.Elapsed})");
        effects.Should().OnlyContain(pair => pair.Value == 1, $"seed {seed}: the inbox lets each message take effect once, however often it arrived");
        (await provider.GetRequiredService<IEventStore>().GetStreamStateAsync(KillRelay.ConflictStream, Timeout)).Exists.Should().BeFalse($"seed {seed}: the failed commits stored nothing");

        static Guid Id(KillAck ack) => Guid.ParseExact(ack.StreamId[KillRelay.StreamPrefix.Length..], "N");
    }

    /// <summary>
    /// Two processes handle the same messages at once, as two consumers given the same deliveries do: each handles
    /// message ids in order, as one unit of work of an inbox claim, an append (at any version) and an outbox message.
    /// One of them, chosen at random, is killed at a random point, and a replacement starts a little before the highest
    /// id handled so far, as a redelivery does. Every message must take effect exactly once: one commit acknowledged at
    /// most, one event and one outbox message per handled id, whichever process handled it and however often it was
    /// delivered.
    /// </summary>
    /// <returns>A task that completes when the test has run.</returns>
    [Fact]
    public async Task Kill_TwoInboxHandlersOfTheSameMessagesKilledAtRandomPoints_EachMessageTakesEffectOnce()
    {
        var seed = NewSeed();
        var random = new Random(seed);
        var target = await CreateDatabaseAsync("inbox");
        var acknowledged = new List<KillAck>();
        var started = 0;
        KillChild Next(int first) =>
            KillChild.Start($"inbox child {started++} (seed {seed})", StoreKind, target, "inbox", first.ToString(CultureInfo.InvariantCulture));
        var children = new List<KillChild> { Next(0), Next(0) };
        int Highest() => acknowledged.Concat(children.SelectMany(c => c.Acknowledged)).Select(a => int.Parse(a.StreamId[KillInbox.StreamPrefix.Length..], CultureInfo.InvariantCulture)).DefaultIfEmpty(0).Max();
        try
        {
            for (var i = 0; i < Iterations; i++)
            {
                var victim = children[random.Next(children.Count)];
                try
                {
                    await victim.WaitForAcksAsync(victim.AckCount + random.Next(1, 40), StepTimeout, Timeout);
                }
                catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
                {
                    throw new InvalidOperationException($"Iteration {i}, seed {seed}: {ex.Message}", ex);
                }

                victim.Kill();
                await victim.DisposeAsync();
                acknowledged.AddRange(victim.Acknowledged);
                children[children.IndexOf(victim)] = Next(Math.Max(0, Highest() - random.Next(0, 30)));
            }
        }
        finally
        {
            foreach (var child in children)
            {
                await child.DisposeAsync();
                acknowledged.AddRange(child.Acknowledged);
            }
        }

        var committed = acknowledged.Where(a => a.Sum == 1).ToList();
        committed.Should().NotBeEmpty($"seed {seed}: the children committed before they were killed");
        acknowledged.Should().Contain(a => a.Sum == 0, $"seed {seed}: copies of handled messages came again and were refused");
        committed.GroupBy(a => a.StreamId).Should().OnlyContain(g => g.Count() == 1, $"seed {seed}: no two copies of one message both commit");

        var services = new ServiceCollection();
        services.AddEventSourcing(es => UseStore(es, target));
        await using var provider = services.BuildServiceProvider();
        var events = new Dictionary<string, int>();
        await foreach (var e in provider.GetRequiredService<IEventStorage>().ReadAllAsync(0, new EventFilter { StreamPrefix = KillInbox.StreamPrefix }, long.MaxValue, Timeout))
        {
            events[e.StreamId] = events.GetValueOrDefault(e.StreamId) + 1;
        }

        var sent = (await provider.GetRequiredService<IOutboxStore>().ReadOutboxAsync(0, int.MaxValue, Timeout))
            .Select(m => KillInbox.Stream(System.Text.Encoding.UTF8.GetString(m.Message.Payload.Span)))
            .ToList();
        events.Should().OnlyContain(pair => pair.Value == 1, $"seed {seed}: each handled message appended its event once");
        sent.Should().OnlyHaveUniqueItems($"seed {seed}: each handled message sent its message once");
        sent.Should().BeEquivalentTo(events.Keys, $"seed {seed}: the event and the message of one handling commit together");
        events.Keys.Should().Contain(committed.Select(a => a.StreamId), $"seed {seed}: an acknowledged commit survives the kill");
        var inbox = provider.GetRequiredService<IInboxStore>();
        foreach (var stream in events.Keys)
        {
            (await inbox.ContainsAsync(KillInbox.Consumer, stream[KillInbox.StreamPrefix.Length..], Timeout)).Should().BeTrue($"seed {seed}: the inbox records {stream}'s message with its effects");
        }
    }

    /// <summary>
    /// A windowed count fed by a RabbitMQ queue (the broker at PATTERNS_RABBITMQ), with store snapshots and its results
    /// sent through the outbox in the snapshots' unit of work, runs in a child process that is killed at random points
    /// (after a random number of clicks entered the pipeline) and started again. Before each child starts, more clicks
    /// join the queue than it takes before its kill, so no child waits for input that its predecessors consumed. After
    /// a last click far ahead fires every window, the outbox must hold exactly one message per user and window, with
    /// the exact count: no click counted twice or lost across the kills, no window result sent twice.
    /// </summary>
    /// <returns>A task that completes when the test has run.</returns>
    [Fact]
    public async Task Kill_WindowedCountToTheOutboxKilledAtRandomPoints_EachWindowResultOnceWithExactCounts()
    {
        const int ClicksPerChild = 200;
        var broker = Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";
        var seed = NewSeed();
        var random = new Random(seed);
        var target = await CreateDatabaseAsync("stream");
        var queue = KillStream.Queue(target);
        var services = new ServiceCollection();
        services.AddEventSourcing(es => UseStore(es, target));
        services.AddPatterns(p => p.UseRabbitMq(broker));
        services.AddMessageQueue(q => q.AddQueue(queue, o => o.Capacity = KillStream.QueueCapacity));
        await using var provider = services.BuildServiceProvider();
        HostedServices running;
        try
        {
            running = await HostedServices.StartAsync(provider, Timeout);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Assert.Skip($"RabbitMQ is not reachable at {WithoutCredentials(broker)} (PATTERNS_RABBITMQ): {ex.Message}");
            throw;
        }

        await using (running)
        {
            var sender = provider.GetRequiredService<Patterns.Queues.IQueueSender>();
            var clicks = new List<KillClick>();
            for (var i = 0; i < Iterations; i++)
            {
                // Three users, two clicks a second of event time, in queue order.
                for (var n = 0; n < ClicksPerChild; n++)
                {
                    var click = new KillClick("u" + (clicks.Count % 3), KillStream.Epoch.AddSeconds(clicks.Count / 2));
                    clicks.Add(click);
                    await sender.SendAsync(queue, click, Timeout);
                }

                var child = KillChild.Start($"stream child {i} (seed {seed})", StoreKind, target, "stream", "0");
                try
                {
                    await child.WaitForAcksAsync(random.Next(1, ClicksPerChild), StepTimeout, Timeout);
                    child.Kill();
                }
                catch (Exception ex) when (ex is TimeoutException or InvalidOperationException)
                {
                    throw new InvalidOperationException($"Iteration {i}, seed {seed}: {ex.Message} {await child.KillAndDescribeAsync()}", ex);
                }
                finally
                {
                    await child.DisposeAsync();
                }
            }

            // The 10-second window of each click (whole seconds since the epoch, rounded down to a multiple of 10).
            var expected = clicks.GroupBy(c => (c.User, Start: (long)(c.At - KillStream.Epoch).TotalSeconds / 10 * 10))
                .ToDictionary(g => $"{g.Key.User}/{g.Key.Start}", g => (long)g.Count());
            var serializer = provider.GetRequiredService<Patterns.Serialization.IMessageSerializer>();
            var outbox = provider.GetRequiredService<IOutboxStore>();

            // What the committed state includes after the last kill: the clicks counted in the results in the outbox and
            // in the snapshot's open windows. The last run must take exactly the others: a click that a committed
            // snapshot includes and that comes again (its acknowledgement lost in a kill) does not enter the pipeline.
            var included = (await ResultsAsync()).Sum(r => r.Value) + await OpenWindowClicksAsync(provider.GetRequiredService<IDocumentStorage>());
            var remaining = clicks.Count - (int)included;
            var last = KillChild.Start($"stream child {Iterations} (seed {seed})", StoreKind, target, "stream", "0");
            var lastRun = string.Empty;
            try
            {
                // Only then the click far ahead, which fires every window: sent earlier, it could enter before clicks
                // that wait in the transport and make them late.
                await last.WaitForAcksAsync(remaining, StepTimeout, Timeout);
                await sender.SendAsync(queue, new KillClick(KillStream.End, KillStream.Epoch.AddDays(1)), Timeout);
                using var done = CancellationTokenSource.CreateLinkedTokenSource(Timeout);
                done.CancelAfter(StepTimeout);
                while ((await outbox.ReadOutboxAsync(0, int.MaxValue, done.Token)).Count < expected.Count)
                {
                    await outbox.WaitForOutboxAsync((await outbox.ReadOutboxAsync(0, int.MaxValue, done.Token)).Select(m => m.Sequence).DefaultIfEmpty(0).Max(), done.Token);
                }
            }
            catch (OperationCanceledException) when (!Timeout.IsCancellationRequested)
            {
                // Fewer results than windows: the checks below name what is missing, with what the last child did.
                lastRun = await last.KillAndDescribeAsync();
            }
            finally
            {
                await last.DisposeAsync();
            }

            var results = await ResultsAsync();
            last.AckCount.Should().Be(remaining + 1, $"seed {seed}: the last run takes the {remaining} clicks no committed snapshot included, and the last one {lastRun}");
            results.Select(r => r.Id).Should().OnlyHaveUniqueItems($"seed {seed}: each window result enters the outbox once across {Iterations} kills {lastRun}");
            results.ToDictionary(r => r.Id, r => r.Value).Should().BeEquivalentTo(expected, $"seed {seed}: each window counts every click once {lastRun}");

            async Task<List<(string Id, long Value)>> ResultsAsync() =>
                [.. (await outbox.ReadOutboxAsync(0, int.MaxValue, Timeout))
                    .Select(m => Patterns.Outbox.OutboxCodec.Decode(m.Message.Payload))
                    .Select(e => (Patterns.Streaming.WindowResult<string, long>)serializer.Deserialize(e.Payload, typeof(Patterns.Streaming.WindowResult<string, long>)))
                    .Select(r => (Id: $"{r.Key}/{(r.Start - KillStream.Epoch).TotalSeconds:0}", r.Value))];
        }
    }

    /// <summary>The clicks counted in the open windows of the streaming kill test's committed snapshot, if any.</summary>
    private async Task<long> OpenWindowClicksAsync(IDocumentStorage documents)
    {
        if (await documents.GetAsync(Patterns.Streaming.StoreStreamSnapshotStore.Collection, KillStream.Name, Timeout) is not { } envelope)
        {
            return 0;
        }

        using var outer = System.Text.Json.JsonDocument.Parse(envelope);
        using var state = System.Text.Json.JsonDocument.Parse(outer.RootElement.GetProperty("operators").GetProperty("per-user").GetBytesFromBase64());
        return state.RootElement.GetProperty("windows").EnumerateArray().Sum(w => w.GetProperty("accumulator").GetInt64());
    }

    /// <summary>Creates an empty database (a file or a schema) for one case, removed when the test ends.</summary>
    /// <param name="name">A name for it, unique within the test.</param>
    /// <returns>What the child takes as its second argument: the file or the schema.</returns>
    protected abstract Task<string> CreateDatabaseAsync(string name);

    /// <summary>Chooses the store in <paramref name="target"/> for a host in the test process.</summary>
    /// <param name="builder">The event-sourcing builder.</param>
    /// <param name="target">The file or schema.</param>
    protected abstract void UseStore(EventSourcingBuilder builder, string target);

    private static int NewSeed() =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_SEED"), CultureInfo.InvariantCulture, out var seed) ? seed : Random.Shared.Next();

    /// <summary>Starts a child that runs the projection and appends, gated: it waits for <see cref="KillChild.GoAsync"/>.</summary>
    /// <summary>
    /// Two children let go on one database, and the next one started (gated) ahead of time, to be let go once the standby
    /// has taken over from an owner that was killed. Disposing it disposes every child left, the spare among them, and
    /// keeps what each acknowledged.
    /// </summary>
    private sealed class KillPair : IAsyncDisposable
    {
        private readonly Func<KillChild> _next;
        private readonly List<KillAck> _acknowledged;
        private readonly CancellationToken _timeout;
        private KillChild? _spare;

        private KillPair(Func<KillChild> next, List<KillAck> acknowledged, CancellationToken timeout)
        {
            _next = next;
            _acknowledged = acknowledged;
            _timeout = timeout;
            Children = [next(), next()];
        }

        /// <summary>Gets the children running now: the owner and its standby, once both are let go.</summary>
        public List<KillChild> Children { get; }

        /// <summary>Starts two children with <paramref name="next"/> and lets them go, then starts the spare.</summary>
        public static async Task<KillPair> StartAsync(Func<KillChild> next, List<KillAck> acknowledged, CancellationToken timeout)
        {
            var pair = new KillPair(next, acknowledged, timeout);
            try
            {
                foreach (var child in pair.Children)
                {
                    await child.GoAsync(StepTimeout, timeout);
                }

                pair._spare = next();
                return pair;
            }
            catch
            {
                await pair.DisposeAsync();
                throw;
            }
        }

        /// <summary>Kills <paramref name="owner"/> with SIGKILL, keeps what it acknowledged, and returns the child left (its standby).</summary>
        public async Task<KillChild> KillAsync(KillChild owner)
        {
            var standby = Children.Single(c => c != owner);
            owner.Kill();
            await owner.DisposeAsync();
            _acknowledged.AddRange(owner.Acknowledged);
            Children.Remove(owner);
            return standby;
        }

        /// <summary>Waits, bounded, until <paramref name="standby"/> owns what the killed owner held.</summary>
        public Task WaitForTakeOverAsync(KillChild standby, string what) =>
            KillChild.WaitUntilAsync(Children, () => standby.IsOwner, what, StepTimeout, _timeout);

        /// <summary>Lets the spare go as the new standby, and starts the next spare.</summary>
        public async Task ReplaceAsync()
        {
            var spare = _spare ?? throw new InvalidOperationException("No spare child was started.");
            await spare.GoAsync(StepTimeout, _timeout);
            Children.Add(spare);
            _spare = _next();
        }

        public async ValueTask DisposeAsync()
        {
            if (_spare is not null)
            {
                Children.Add(_spare);
                _spare = null;
            }

            foreach (var child in Children)
            {
                await child.DisposeAsync();
                _acknowledged.AddRange(child.Acknowledged);
            }

            Children.Clear();
        }
    }

    private KillChild StartChild(string name, string target, int seed) =>
        KillChild.Start(name, StoreKind, target, "run", seed.ToString(CultureInfo.InvariantCulture), "gated");

    /// <summary>
    /// Catches the projection up in a host in this process (once the last killed child's lease has expired) and checks
    /// every account's total against the log, and every acknowledged append against the log.
    /// </summary>
    private async Task VerifyTotalsAsync(string target, IReadOnlyList<KillAck> acknowledged, int seed, string run)
    {
        var services = new ServiceCollection();
        services.AddEventSourcing(es =>
        {
            UseStore(es, target);
            KillProjection.Configure(es);
        });
        await using var provider = services.BuildServiceProvider();
        await using var running = await HostedServices.StartAsync(provider, Timeout);
        var store = provider.GetRequiredService<IEventStore>();
        var head = await store.GetHeadPositionAsync(Timeout);
        using (var caughtUp = CancellationTokenSource.CreateLinkedTokenSource(Timeout))
        {
            caughtUp.CancelAfter(StepTimeout);
            await provider.GetRequiredService<IEventSubscriptions>().WaitForPositionAsync(KillProjection.Name, head, caughtUp.Token);
        }

        var expected = new Dictionary<string, KillTotal>();
        await foreach (var e in store.ReadAllAsync(0, null, long.MaxValue, Timeout))
        {
            var deposit = e.Data.Should().BeOfType<KillDeposit>().Subject;
            var total = expected.GetValueOrDefault(e.StreamId, new KillTotal(0, 0));
            expected[e.StreamId] = new KillTotal(total.Count + 1, total.Sum + deposit.Amount);
        }

        acknowledged.Should().NotBeEmpty($"seed {seed}: the children appended before they were killed");
        foreach (var ack in acknowledged)
        {
            expected.GetValueOrDefault(ack.StreamId)?.Count.Should().BeGreaterThanOrEqualTo(ack.Version, $"seed {seed}: an acknowledged append survives the kill");
            expected.Should().ContainKey(ack.StreamId, $"seed {seed}: an acknowledged append survives the kill");
        }

        var readModels = provider.GetRequiredService<IReadModels>();
        foreach (var (account, total) in expected)
        {
            (await readModels.GetAsync<KillTotal>(KillProjection.Collection, account, Timeout)).Should().Be(
                total,
                $"seed {seed} ({run}): the fold of {account} applies each of its {total.Count} deposits exactly once");
        }
    }

    /// <summary>The broker's address for a message: without the user name and password the URI may carry.</summary>
    private static string WithoutCredentials(string uri) =>
        Uri.TryCreate(uri, UriKind.Absolute, out var parsed) ? $"{parsed.Scheme}://{parsed.Host}:{parsed.Port}{parsed.AbsolutePath}" : "(an invalid URI)";

    /// <summary>A signal the test's consumer raises after each message; waits re-check their condition on it.</summary>
    private sealed class Pulse
    {
        private readonly Lock _gate = new();
        private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Signal()
        {
            TaskCompletionSource raised;
            lock (_gate)
            {
                raised = _next;
                _next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }

            raised.TrySetResult();
        }

        /// <summary>
        /// Waits until <paramref name="condition"/> holds, re-checking it on each signal, at most <see cref="StepTimeout"/>
        /// in all: the children keep committing and the consumer keeps signalling, so a message that never arrives must
        /// not keep the wait alive.
        /// </summary>
        public async Task WaitUntilAsync(Func<bool> condition, Func<string> what, CancellationToken cancellationToken)
        {
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            bounded.CancelAfter(StepTimeout);
            while (true)
            {
                Task next;
                lock (_gate)
                {
                    next = _next.Task;
                }

                if (condition())
                {
                    return;
                }

                try
                {
                    await next.WaitAsync(bounded.Token);
                }
                catch (OperationCanceledException ex) when (bounded.IsCancellationRequested)
                {
                    throw new TimeoutException(
                        $"Waited {(cancellationToken.IsCancellationRequested ? "until the case's timeout" : StepTimeout.ToString())} for {what()}.", ex);
                }
            }
        }
    }

    /// <summary>The container's hosted services, started as a host starts them and stopped in reverse order on dispose.</summary>
    private sealed class HostedServices(IReadOnlyList<IHostedService> services) : IAsyncDisposable
    {
        public static async Task<HostedServices> StartAsync(IServiceProvider provider, CancellationToken cancellationToken)
        {
            var services = provider.GetServices<IHostedService>().ToList();
            foreach (var service in services)
            {
                await service.StartAsync(cancellationToken);
            }

            return new HostedServices(services);
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var service in services.Reverse())
            {
                await service.StopAsync(CancellationToken.None);
            }
        }
    }
}
