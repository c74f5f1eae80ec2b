using System.Collections.Concurrent;
using System.Threading.Tasks.Sources;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Batching;
using Patterns.Consuming;
using Patterns.Core.Tests.Queues;
using Patterns.Core.Tests.RequestResponse;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Transport;

namespace Patterns.Core.Tests.Consuming;

public sealed class ConsumeFilterTests
{
    private static readonly AsyncLocal<string?> Tenant = new();

    [Fact]
    public async Task Filters_RunInRegistrationOrderAroundEveryHandler()
    {
        var trace = new ConcurrentQueue<string>();
        using var host = await TestHost.StartAsync(
            b =>
            {
                b.AddPubSub(ps => ps.Subscribe<Reminder>((r, _, _) => { trace.Enqueue($"sub {r.Id}"); return default; }, "filtered", o => o.ConsumerGroup = "sub"));
                b.AddMessageQueue(q => q.AddConsumer<Reminder>("filtered-q", (r, _, _) => { trace.Enqueue($"queue {r.Id}"); return default; }));
            },
            patterns: p => p
                .AddConsumeFilter(Recording("outer", trace))
                .AddConsumeFilter(Recording("inner", trace)));

        // The harness records a delivery once it is settled, after the filters returned.
        await host.Services.GetRequiredService<IPublisher>().PublishAsync("filtered", new Reminder(1));
        await host.Harness().WaitForDeliveriesAsync(1).WaitAsync(TestHost.Wait);
        await host.Services.GetRequiredService<IQueueSender>().SendAsync("filtered-q", new Reminder(2));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        trace.Should().Equal(
            "outer> Reminder sub", "inner> Reminder sub", "sub 1", "<inner", "<outer",
            "outer> Reminder filtered-q", "inner> Reminder filtered-q", "queue 2", "<inner", "<outer");
    }

    [Fact]
    public async Task Filter_TenantFromAHeader_IsSeenByTheHandler()
    {
        var seen = new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await TestHost.StartAsync(
            b => b.AddMessageQueue(q => q.AddConsumer<Reminder>("tenants", (_, _, _) => { seen.TrySetResult(Tenant.Value); return default; })),
            patterns: p => p.AddConsumeFilter(async (context, next) =>
            {
                Tenant.Value = context.Envelope.TryGetHeader("tenant", out var tenant) ? tenant : null;
                try
                {
                    await next(context);
                }
                finally
                {
                    Tenant.Value = null;
                }
            }));

        await host.Services.GetRequiredService<IQueueSender>().SendAsync(
            "tenants", new Reminder(1), new MessageOptions { Headers = new Dictionary<string, string> { ["tenant"] = "acme" } });

        (await seen.Task.WaitAsync(TestHost.Wait)).Should().Be("acme");
    }

    [Fact]
    public async Task Filter_ThatDoesNotCallNext_SkipsTheHandlerAndAcknowledges()
    {
        var handled = new ConcurrentQueue<int>();
        using var host = await TestHost.StartAsync(
            b => b.AddMessageQueue(q => q.AddConsumer<Reminder>("validated", (r, _, _) => { handled.Enqueue(r.Id); return default; })),
            patterns: p => p.AddConsumeFilter((context, next) => ((Reminder)context.Message).Id < 0 ? default : next(context)));
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await sender.SendAsync("validated", new Reminder(-1));
        await sender.SendAsync("validated", new Reminder(2));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        handled.Should().Equal(2);
        host.Harness().Deliveries.Should().OnlyContain(d => d.Outcome == Patterns.Transport.SettlementKind.Ack);
    }

    [Fact]
    public async Task Filter_MapsAnException_TheDeadLetterRecordsTheMappedOne()
    {
        using var host = await TestHost.StartAsync(
            b => b.AddMessageQueue(q => q.AddConsumer<Reminder>("mapped", (_, _, _) => throw new KeyNotFoundException("no such reminder"), o => o.Retry = null)),
            patterns: p => p.AddConsumeFilter(async (context, next) =>
            {
                try
                {
                    await next(context);
                }
                catch (KeyNotFoundException ex)
                {
                    throw new InvalidOperationException($"Reminder lookup failed in {context.HandlerName}: {ex.Message}", ex);
                }
            }));

        await host.Services.GetRequiredService<IQueueSender>().SendAsync("mapped", new Reminder(1));

        var dead = await DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), "mapped", 1);
        dead.Single().ExceptionType.Should().Be(typeof(InvalidOperationException).FullName);
        dead.Single().ExceptionMessage.Should().Be("Reminder lookup failed in delegate<Reminder>: no such reminder");
    }

    [Fact]
    public void AddConsumeFilter_SameTypeTwice_RegisteredOnce()
    {
        var services = new ServiceCollection();
        services.AddPatterns(p => p.AddConsumeFilter<CountingFilter>().AddConsumeFilter<CountingFilter>());

        services.Count(d => d.ServiceType == typeof(IConsumeFilter)).Should().Be(1);
    }

    [Fact]
    public void Wrap_NoFilters_ReturnsTheHandlerItself()
    {
        var inner = new DelegateHandlerInvoker<Reminder>((_, _, _) => default, "h");

        FilteredHandlerInvoker<Reminder>.Wrap(inner, []).Should().BeSameAs(inner, "with no filter registered, handlers are called directly");
        FilteredHandlerInvoker<Reminder>.Wrap(inner, [new CountingFilter()]).Should().NotBeSameAs(inner);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Filters_RunAroundRequestHandlers_InProcessAndOverATransport(bool inProcess)
    {
        var trace = new ConcurrentQueue<string>();
        using var host = await TestHost.StartAsync(
            b => b.AddRequestResponse(r => r
                .AddHandler<GetQuote, Quote>((q, _) => { trace.Enqueue("handler " + q.Symbol); return new ValueTask<Quote>(new Quote(q.Symbol, 42m)); })
                .Configure(o => o.PreferInProcessDispatch = inProcess)),
            patterns: p => p
                .AddConsumeFilter(Recording("outer", trace))
                .AddConsumeFilter(async (context, next) =>
                {
                    trace.Enqueue($"inner> {((GetQuote)context.Message).Symbol} {context.Envelope.TryGetHeader("tenant", out var tenant)} {tenant}");
                    await next(context);
                    trace.Enqueue("<inner");
                }));
        var client = host.Services.GetRequiredService<IRequestClient>();

        var response = await client.GetResponseAsync<GetQuote, Quote>(
            new GetQuote("ACME"), new MessageOptions { Headers = new Dictionary<string, string> { ["tenant"] = "t1" } });

        response.Message.Should().Be(new Quote("ACME", 42m));
        trace.Should().Equal("outer> GetQuote requests.Patterns.Core.Tests.RequestResponse.GetQuote", "inner> ACME True t1", "handler ACME", "<inner", "<outer");
    }

    [Fact]
    public async Task Filter_ThatThrowsAroundARequest_FailsTheCallWithItsMessage_AndOneThatSkipsNextSaysSo()
    {
        using var host = await TestHost.StartAsync(
            b => b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => new ValueTask<Quote>(new Quote(q.Symbol, 1m)))),
            patterns: p => p.AddConsumeFilter((context, next) => ((GetQuote)context.Message).Symbol switch
            {
                "" => throw new ArgumentException("A symbol is required."),
                "SKIP" => default,
                _ => next(context),
            }));
        var client = host.Services.GetRequiredService<IRequestClient>();

        var refused = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote(""));
        (await refused.Should().ThrowAsync<RequestFailedException>()).Which.Message.Should().Contain("A symbol is required.");
        var skipped = async () => await client.SendAsync<GetQuote, Quote>(new GetQuote("SKIP"));
        (await skipped.Should().ThrowAsync<RequestFailedException>()).Which.Message.Should().Contain("returned without calling next for request 'GetQuote'");
        (await client.SendAsync<GetQuote, Quote>(new GetQuote("OK"))).Price.Should().Be(1m);
    }

    [Fact]
    public async Task Filters_RunOncePerBatchAroundABatchHandler_WithTheBatchAsTheMessage()
    {
        var trace = new ConcurrentQueue<string>();
        var seen = new ConcurrentQueue<(int Count, Guid FirstId)>();
        var handlerFirst = Guid.Empty;
        using var host = await TestHost.StartAsync(
            b => b.AddBatching(x => x.AddBatchHandler<Job>(
                TransportAddress.Queue("batched"),
                (batch, _) =>
                {
                    trace.Enqueue($"batch {string.Join(',', batch.ToArray().Select(j => j.Id).Order())}");
                    handlerFirst = batch.Envelopes[0].MessageId;
                    return default;
                },
                o => { o.MaxCount = 3; o.MaxAge = TimeSpan.FromHours(1); })),
            patterns: p => p
                .AddConsumeFilter(Recording("outer", trace))
                .AddConsumeFilter((context, next) =>
                {
                    seen.Enqueue((((Batch<Job>)context.Message).Count, context.Envelope.MessageId));
                    return next(context);
                }));
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await sender.SendAsync("batched", new Job(1));
        await sender.SendAsync("batched", new Job(2));
        await sender.SendAsync("batched", new Job(3));
        await host.Harness().WaitForDeliveriesAsync(3).WaitAsync(TestHost.Wait);

        trace.Should().Equal("outer> Batch`1 batched", "batch 1,2,3", "<outer");
        seen.Should().Equal([(3, handlerFirst)], "the filter sees the batch and the envelope of its first message");
        host.Harness().Deliveries.Should().OnlyContain(d => d.Outcome == SettlementKind.Ack);
    }

    [Fact]
    public async Task Filter_AroundABatchHandler_ThatThrows_FailsTheBatchLikeTheHandler()
    {
        var handled = 0;
        using var host = await TestHost.StartAsync(
            b => b.AddBatching(x => x.AddBatchHandler<Job>(
                TransportAddress.Queue("refused"),
                (batch, _) =>
                {
                    Interlocked.Add(ref handled, batch.Count);
                    return default;
                },
                o => { o.MaxCount = 2; o.MaxAge = TimeSpan.FromHours(1); o.Retry!.Delay = TimeSpan.Zero; o.Retry.MaxRetryAttempts = 1; })),
            patterns: p => p.AddConsumeFilter((context, next) =>
                context.Message is Batch<Job> ? throw new InvalidOperationException("batches are refused here") : next(context)));
        var sender = host.Services.GetRequiredService<IQueueSender>();

        await sender.SendAsync("refused", new Job(1));
        await sender.SendAsync("refused", new Job(2));
        await host.Harness().WaitForDeliveriesAsync(2).WaitAsync(TestHost.Wait);

        Volatile.Read(ref handled).Should().Be(0);
        host.Harness().Deliveries.Take(2).Should().OnlyContain(
            d => d.Outcome != SettlementKind.Ack && d.Exception != null && d.Exception.Message == "batches are refused here");
    }

    [Fact]
    public async Task Filters_AroundAHandlerThatCompletesSynchronously_AllocateNothingPerMessage()
    {
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(new CompletedInvoker(), [new CountingFilter(), new CountingFilter(), new CountingFilter()]);
        var consumer = new ConsumerIdentity("reminders", "group", EmptyProvider.Instance, null!);
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "reminder" };
        var message = new Memo("r");
        await invoker.InvokeAsync(message, envelope, consumer, CancellationToken.None);

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 100; i++)
        {
            await invoker.InvokeAsync(message, envelope, consumer, CancellationToken.None);
        }

        (GC.GetAllocatedBytesForCurrentThread() - before).Should().Be(0, "a finished message's context carries the next one");
    }

    [Fact]
    public async Task Filters_AndAHandler_ReturningCompletedTaskObjects_FreeTheContextAtOnce_WhichCarriesTheNextMessage_AllocatingNothing()
    {
        // A completed task with an object behind it (not the default one) takes the step's longer check: it is not counted
        // as still running (which would wrap it), so the context is freed when the pipeline returns, the next message
        // travels in it, and nothing is allocated per message.
        var seen = new List<(ConsumeContext Context, string Message)>(capacity: 110);
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new InlineInvoker(_ => new ValueTask(Task.CompletedTask)),
            [
                new DelegateFilter((context, next) =>
                {
                    seen.Add((context, ((Memo)context.Message).Text));
                    return next(context);
                }),
                new DelegateFilter((context, next) => new ValueTask(next(context).AsTask())),
                new DelegateFilter((context, next) => new ValueTask(next(context).AsTask())),
            ]);
        var messages = Enumerable.Range(0, 100).Select(i => new Memo($"m{i}")).ToArray();
        var envelope = new Envelope { MessageId = Guid.NewGuid() };

        await invoker.InvokeAsync(new Memo("a"), new Envelope { MessageId = Guid.NewGuid() }, Reminders, CancellationToken.None);
        seen[0].Context.Envelope.MessageId.Should().Be(Guid.Empty, "the context was freed when the pipeline returned");
        await invoker.InvokeAsync(new Memo("b"), new Envelope { MessageId = Guid.NewGuid() }, Reminders, CancellationToken.None);

        var before = GC.GetAllocatedBytesForCurrentThread();
        foreach (var message in messages)
        {
            await invoker.InvokeAsync(message, envelope, Reminders, CancellationToken.None);
        }

        (GC.GetAllocatedBytesForCurrentThread() - before).Should().Be(0, "a completed task is passed on as it is, and a finished message's context carries the next one");
        seen.Select(s => s.Message).Should().Equal(["a", "b", .. messages.Select(m => m.Text)]);
        seen.Should().OnlyContain(s => ReferenceEquals(s.Context, seen[0].Context), "a freed context carries the thread's next message");
    }

    [Fact]
    public async Task Context_ReusedForMessagesWithACancelledTokenNoTokenAndAnotherToken_GivesTheHandlerAndEveryFilterTheTokenOfItsMessage()
    {
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        using var fresh = new CancellationTokenSource();
        var seen = new List<(string Where, string Message, CancellationToken Token, ConsumeContext? Context)>();
        Func<ConsumeContext, ConsumeDelegate, ValueTask> Recording(string name) => async (context, next) =>
        {
            seen.Add((name, ((Memo)context.Message).Text, context.CancellationToken, context));
            await next(context);
        };
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new TokenRecordingInvoker(seen),
            [new DelegateFilter(Recording("f1")), new DelegateFilter(Recording("f2")), new DelegateFilter(Recording("f3"))]);

        await invoker.InvokeAsync(new Memo("1"), new Envelope(), Reminders, cancelled.Token);
        await invoker.InvokeAsync(new Memo("2"), new Envelope(), Reminders, CancellationToken.None);
        await invoker.InvokeAsync(new Memo("3"), new Envelope(), Reminders, fresh.Token);

        seen.Select(s => (s.Where, s.Message)).Should().Equal(
            ("f1", "1"), ("f2", "1"), ("f3", "1"), ("handler", "1"),
            ("f1", "2"), ("f2", "2"), ("f3", "2"), ("handler", "2"),
            ("f1", "3"), ("f2", "3"), ("f3", "3"), ("handler", "3"));
        var expected = new Dictionary<string, CancellationToken> { ["1"] = cancelled.Token, ["2"] = CancellationToken.None, ["3"] = fresh.Token };
        foreach (var (where, message, token, _) in seen)
        {
            token.Should().Be(expected[message], $"{where} of message {message} sees that message's token");
        }

        seen.Where(s => s.Message == "1").Should().OnlyContain(s => s.Token.IsCancellationRequested);
        seen.Where(s => s.Message != "1").Should().OnlyContain(s => !s.Token.IsCancellationRequested);
        seen.Where(s => s.Context != null).Should().OnlyContain(s => ReferenceEquals(s.Context, seen[0].Context), "the three messages travel in one reused context");
    }

    [Theory]
    [InlineData(0, false)]
    [InlineData(0, true)]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(2, false)]
    [InlineData(2, true)]
    [InlineData(3, false)]
    [InlineData(3, true)]
    public async Task PooledTask_ReturnedByAFilterOrTheHandler_CompletedAtOnceOrLater_IsConsumedExactlyOnce(int pooledAt, bool later)
    {
        // pooledAt: the filter (0-2) or the handler (3) that returns a task backed by one reusable source, which throws when
        // it is asked about a token it has already given the result of (a second GetResult, or a look after it).
        var source = new PooledTaskSource();
        ValueTask Pooled()
        {
            var task = source.Start();
            if (!later)
            {
                source.Complete();
            }

            return task;
        }

        IConsumeFilter Filter(int index) => new DelegateFilter((context, next) =>
        {
            if (index != pooledAt)
            {
                return next(context);
            }

            // The rest of the chain completes at once here (the handler is synchronous); its task is consumed first.
            var rest = next(context);
            rest.IsCompleted.Should().BeTrue();
            rest.GetAwaiter().GetResult();
            return Pooled();
        });
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new InlineInvoker(_ => pooledAt == 3 ? Pooled() : default),
            [Filter(0), Filter(1), Filter(2)]);

        for (var i = 1; i <= 3; i++)
        {
            var pending = invoker.InvokeAsync(new Memo($"m{i}"), new Envelope(), Reminders, CancellationToken.None);
            pending.IsCompleted.Should().Be(!later);
            if (later)
            {
                source.Complete();
            }

            await pending.AsTask().WaitAsync(TestHost.Wait);
            source.Results.Should().Be(i, "each message's pooled task is consumed once");
        }
    }

    [Fact]
    public async Task Context_OnceItsMessageIsHandled_IsClearedAndCarriesTheNextMessageAlone()
    {
        ConsumeContext? kept = null;
        var seen = new List<(Guid Id, string Message, int Items)>();
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new CompletedInvoker(),
            [new DelegateFilter((context, next) =>
            {
                kept = context;
                seen.Add((context.Envelope.MessageId, ((Memo)context.Message).Text, context.Items.Count));
                context.Items["tenant"] = ((Memo)context.Message).Text;
                return next(context);
            })]);
        var consumer = new ConsumerIdentity("reminders", "group", EmptyProvider.Instance, null!);
        var first = Guid.NewGuid();
        var second = Guid.NewGuid();

        await invoker.InvokeAsync(new Memo("a"), new Envelope { MessageId = first }, consumer, CancellationToken.None);
        kept!.Envelope.MessageId.Should().Be(Guid.Empty, "a handled message's envelope is not kept alive by a reused context");
        kept.Items.Should().BeEmpty();
        await invoker.InvokeAsync(new Memo("b"), new Envelope { MessageId = second }, consumer, CancellationToken.None);

        seen.Should().Equal((first, "a", 0), (second, "b", 0));
    }

    [Fact]
    public async Task Context_ReusedByAnotherConsumerOfTheSameMessageType_ReportsThatConsumersSourceGroupHandlerAndServices()
    {
        var seen = new List<(ConsumeContext Context, string Source, string Group, string Handler, IServiceProvider Services)>();
        var filter = new DelegateFilter((context, next) =>
        {
            seen.Add((context, context.Source, context.ConsumerGroup, context.HandlerName, context.Services));
            return next(context);
        });
        var first = FilteredHandlerInvoker<Memo>.Wrap(new CompletedInvoker(), [filter]);
        var second = FilteredHandlerInvoker<Memo>.Wrap(new GatedInvoker(Task.CompletedTask), [filter]);
        using var otherServices = new ServiceCollection().BuildServiceProvider();
        var reminders = new ConsumerIdentity("reminders", "group-1", EmptyProvider.Instance, null!);
        var alerts = new ConsumerIdentity("alerts", "group-2", otherServices, null!);

        await first.InvokeAsync(new Memo("a"), new Envelope(), reminders, CancellationToken.None);
        await second.InvokeAsync(new Memo("b"), new Envelope(), alerts, CancellationToken.None);
        await first.InvokeAsync(new Memo("c"), new Envelope(), reminders, CancellationToken.None);

        seen.Select(s => s.Context).Distinct().Should().ContainSingle("one thread's finished context carries every next message of its type");
        seen.Select(s => (s.Source, s.Group, s.Handler, s.Services)).Should().Equal(
            ("reminders", "group-1", "completed", (IServiceProvider)EmptyProvider.Instance),
            ("alerts", "group-2", "gated", otherServices),
            ("reminders", "group-1", "completed", EmptyProvider.Instance));
    }

    [Fact]
    public async Task Contexts_OfMessagesHandledAtTheSameTime_AreSeparate()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = new ConcurrentQueue<string>();
        var contexts = new ConcurrentDictionary<string, ConsumeContext>();
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new CompletedInvoker(),
            [new DelegateFilter(async (context, next) =>
            {
                var text = ((Memo)context.Message).Text;
                contexts[text] = context;
                if (text != "warm")
                {
                    await gate.Task;
                }

                handled.Enqueue($"{text}:{context.Envelope.MessageType}:{((Memo)context.Message).Text}");
                await next(context);
            })]);
        var consumer = new ConsumerIdentity("reminders", "group", EmptyProvider.Instance, null!);
        await invoker.InvokeAsync(new Memo("warm"), new Envelope { MessageType = "type-warm" }, consumer, CancellationToken.None);

        var a = invoker.InvokeAsync(new Memo("a"), new Envelope { MessageType = "type-a" }, consumer, CancellationToken.None).AsTask();
        var b = invoker.InvokeAsync(new Memo("b"), new Envelope { MessageType = "type-b" }, consumer, CancellationToken.None).AsTask();
        gate.SetResult();
        await Task.WhenAll(a, b);

        handled.Should().BeEquivalentTo("warm:type-warm:warm", "a:type-a:a", "b:type-b:b");
        contexts["a"].Should().BeSameAs(contexts["warm"], "the thread's free context carries its next message");
        contexts["b"].Should().NotBeSameAs(contexts["a"], "the first message still travels in it");
    }

    [Fact]
    public async Task Context_WhoseHandlerFinishesOnAnotherThread_CarriesTheNextMessageOfThatThread()
    {
        var gate = new TaskCompletionSource();
        var contexts = new List<(string Text, ConsumeContext Context, int Thread)>();
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new GatedInvoker(gate.Task),
            [new DelegateFilter((context, next) =>
            {
                lock (contexts)
                {
                    contexts.Add((((Memo)context.Message).Text, context, Environment.CurrentManagedThreadId));
                }

                return next(context);
            })]);
        var slow = invoker.InvokeAsync(new Memo("slow"), new Envelope(), Reminders, CancellationToken.None).AsTask();
        var nextOnThisThread = invoker.InvokeAsync(new Memo("here"), new Envelope(), Reminders, CancellationToken.None);
        ValueTask nextThere = default;

        // The gate's continuations run inline: the slow message finishes on the other thread before it sends its own.
        var other = new Thread(() =>
        {
            gate.SetResult();
            nextThere = invoker.InvokeAsync(new Memo("there"), new Envelope(), Reminders, CancellationToken.None);
        });
        other.Start();
        other.Join();
        await slow;
        await nextOnThisThread;
        await nextThere;

        contexts.Select(c => c.Text).Should().Equal("slow", "here", "there");
        contexts[1].Context.Should().NotBeSameAs(contexts[0].Context, "the slow message still ran when this thread sent its next one");
        contexts[2].Context.Should().BeSameAs(contexts[0].Context, "the slow message's context was parked on the thread it finished on");
        contexts[2].Thread.Should().NotBe(contexts[0].Thread);
    }

    [Fact]
    public async Task Context_WhoseHandlerStillRunsWhenItsPipelineEnds_IsNotReusedForTheNextMessage_WhoseNewContextTakesItsPlace()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var contexts = new List<ConsumeContext>();
        Task? abandoned = null;
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new GatedInvoker(release.Task),
            [new DelegateFilter((context, next) =>
            {
                contexts.Add(context);
                if (((Memo)context.Message).Text == "slow")
                {
                    // Gives up waiting for the handler, as a timeout filter does.
                    abandoned = next(context).AsTask();
                    return default;
                }

                return next(context);
            })]);
        var consumer = new ConsumerIdentity("reminders", "group", EmptyProvider.Instance, null!);
        await invoker.InvokeAsync(new Memo("warm"), new Envelope { MessageType = "warm" }, consumer, CancellationToken.None);
        contexts.RemoveAt(0);

        await invoker.InvokeAsync(new Memo("slow"), new Envelope { MessageType = "slow" }, consumer, CancellationToken.None);
        await invoker.InvokeAsync(new Memo("fast"), new Envelope { MessageType = "fast" }, consumer, CancellationToken.None);
        await invoker.InvokeAsync(new Memo("next"), new Envelope { MessageType = "next" }, consumer, CancellationToken.None);

        contexts[1].Should().NotBeSameAs(contexts[0], "the first message's handler had not finished");
        contexts[2].Should().BeSameAs(contexts[1], "the context made for the message after the slow one took its place on the thread");
        ((Memo)contexts[0].Message).Text.Should().Be("slow");
        contexts[0].Envelope.MessageType.Should().Be("slow");
        release.SetResult();
        await abandoned!;
        contexts[0].Message.Should().BeNull("the handler call was the last one running through the context, and freed it");
    }

    [Fact]
    public async Task Filter_ThatATimeoutFilterGaveUpOn_StillRunsWithItsOwnMessage_WhileTheNextMessageTravelsInAnotherContext()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var limiter = new Dictionary<string, TaskCompletionSource> { ["m1"] = new(), ["m2"] = new() };
        var trace = new ConcurrentQueue<string>();
        var contexts = new ConcurrentDictionary<string, ConsumeContext>();
        Task? abandoned = null;
        var timeout = new DelegateFilter(async (context, next) =>
        {
            var text = ((Memo)context.Message).Text;
            contexts[text] = context;
            var call = next(context).AsTask();
            if (await Task.WhenAny(call, Task.Delay(TimeSpan.FromSeconds(5), time)) != call)
            {
                trace.Enqueue($"timed out {text}");
                abandoned = call;
                return;
            }

            await call;
        });
        var throttle = new DelegateFilter(async (context, next) =>
        {
            await limiter[((Memo)context.Message).Text].Task;
            await next(context);
            trace.Enqueue($"after {((Memo)context.Message).Text}");
        });
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new InlineInvoker(message =>
            {
                trace.Enqueue($"handler {message.Text}");
                return default;
            }),
            [timeout, throttle]);

        // The first message times out while the throttle holds it; the next one is sent where the first one ended (no
        // synchronization context: each await continues on the thread that completed what it awaited).
        await Task.Run(async () =>
        {
            var first = invoker.InvokeAsync(new Memo("m1"), new Envelope { MessageType = "m1" }, Reminders, CancellationToken.None).AsTask();
            time.Advance(TimeSpan.FromSeconds(5));
            await first;
            var second = invoker.InvokeAsync(new Memo("m2"), new Envelope { MessageType = "m2" }, Reminders, CancellationToken.None).AsTask();
            limiter["m1"].SetResult();
            await abandoned!;
            limiter["m2"].SetResult();
            await second;
        }).WaitAsync(TestHost.Wait);

        trace.Should().Equal("timed out m1", "handler m1", "after m1", "handler m2", "after m2");
        contexts["m2"].Should().NotBeSameAs(contexts["m1"], "the throttle still ran with the first message when the second came");
        contexts["m1"].Message.Should().BeNull("the throttle's call was the last one running through the first context, and freed it");
    }

    [Fact]
    public async Task Filter_ThatCallsNextAfterItsTaskCompleted_GetsAnErrorSayingSo()
    {
        (ConsumeContext Context, ConsumeDelegate Next)? kept = null;
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new CompletedInvoker(),
            [new DelegateFilter((context, next) =>
            {
                kept = (context, next);
                return default;
            })]);
        await invoker.InvokeAsync(new Memo("a"), new Envelope(), new ConsumerIdentity("reminders", "group", EmptyProvider.Instance, null!), CancellationToken.None);

        var late = () => kept!.Value.Next(kept.Value.Context).AsTask();

        (await late.Should().ThrowAsync<InvalidOperationException>()).WithMessage("A consume filter called next for a 'Memo' message after the task it returned had completed*");
    }

    [Fact]
    public async Task Filter_ThatPassesNextTheContextOfAMessageOfAnotherType_GetsAnErrorSayingSo_AndNoHandlerRunsWithIt()
    {
        // The Memo message's context is in use (its handler runs the Guid message inline) when the Guid message's filter
        // passes it to its next: the Guid pipeline must not read it as one of its own contexts.
        var ids = new List<Guid>();
        var memos = new List<string>();
        ConsumeContext? memoContext = null;
        Exception? error = null;
        var guids = FilteredHandlerInvoker<Guid>.Wrap(
            new RecordingGuidInvoker(ids),
            [new DelegateFilter((context, next) => next(memoContext!))]);
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new InlineInvoker(async message =>
            {
                memos.Add(message.Text);
                try
                {
                    await guids.InvokeAsync(Guid.NewGuid(), new Envelope(), Reminders, CancellationToken.None);
                }
                catch (InvalidOperationException e)
                {
                    error = e;
                }
            }),
            [new DelegateFilter((context, next) =>
            {
                memoContext = context;
                return next(context);
            })]);

        await invoker.InvokeAsync(new Memo("outer"), new Envelope(), Reminders, CancellationToken.None);

        error.Should().NotBeNull().And.BeOfType<InvalidOperationException>()
            .Which.Message.Should().Be(
                "A consume filter passed next the context of a 'Memo' message in the pipeline of a 'Guid' message: next must be given the context the filter received.");
        ids.Should().BeEmpty("no handler runs with another message's context");
        memos.Should().Equal("outer");
    }

    [Fact]
    public async Task BatchFilter_ThatPassesNextTheContextOfAMessageOfAnotherType_GetsAnErrorSayingSo_AndNoHandlerRunsWithIt()
    {
        // The Memo message's context is in use (its handler runs the batch inline) when the batch's filter passes it to its
        // next: the batch pipeline must refuse it, not run the Memo handler again with it.
        var batches = 0;
        ConsumeContext? memoContext = null;
        var batchInvoker = FilteredBatchHandlerInvoker<Job>.Wrap(
            new DelegateBatchHandlerInvoker<Job>((_, _) =>
            {
                batches++;
                return default;
            }, "jobs"),
            [new DelegateFilter((context, next) => next(memoContext!))],
            "batched",
            "group",
            EmptyProvider.Instance);
        var buffer = new BatchBuffer<Job>();
        buffer.Append(new Job(1), 1, 4, tracked: false, default, null);

        var (memos, error) = await RunInsideAMemoPipelineAsync(
            context => memoContext = context, () => batchInvoker.InvokeAsync(new Batch<Job>(buffer), CancellationToken.None));

        error.Should().NotBeNull().And.BeOfType<InvalidOperationException>()
            .Which.Message.Should().Be(
                "A consume filter passed next the context of a 'Memo' message in the pipeline of a 'Batch<Job>' message: next must be given the context the filter received.");
        batches.Should().Be(0, "the filter never passed the batch's own context on");
        memos.Should().Equal(["outer"], "no handler runs with another message's context");
    }

    [Fact]
    public async Task RequestFilter_ThatPassesNextTheContextOfAMessageOfAnotherType_GetsAnErrorSayingSo_AndNoHandlerRunsWithIt()
    {
        var answered = 0;
        ConsumeContext? memoContext = null;
        var entry = new DelegateRequestHandlerEntry<GetQuote, Quote>(
            (q, _) =>
            {
                answered++;
                return new ValueTask<Quote>(new Quote(q.Symbol, 1m));
            },
            "quotes",
            pipeline: null);
        entry.Configure(EmptyProvider.Instance, "requests", [new DelegateFilter((context, next) => next(memoContext!))]);

        var (memos, error) = await RunInsideAMemoPipelineAsync(
            context => memoContext = context,
            async () => await entry.InvokeFilteredAsync(new GetQuote("ACME"), null, new Envelope(), CancellationToken.None));

        error.Should().NotBeNull().And.BeOfType<InvalidOperationException>()
            .Which.Message.Should().Be(
                "A consume filter passed next the context of a 'Memo' message in the pipeline of a 'GetQuote' message: next must be given the context the filter received.");
        answered.Should().Be(0, "the filter never passed the request's own context on");
        memos.Should().Equal(["outer"], "no handler runs with another message's context");
    }

    [Fact]
    public async Task ConsumeFilter_ThatPassesNextTheContextOfABatch_GetsAnErrorNamingTheBatch()
    {
        ConsumeContext? batchContext = null;
        Exception? error = null;
        var ids = new List<Guid>();
        var guids = FilteredHandlerInvoker<Guid>.Wrap(new RecordingGuidInvoker(ids), [new DelegateFilter((context, next) => next(batchContext!))]);
        var handled = 0;
        var batchInvoker = FilteredBatchHandlerInvoker<Job>.Wrap(
            new DelegateBatchHandlerInvoker<Job>(async (_, _) =>
            {
                if (++handled > 1)
                {
                    return;
                }

                try
                {
                    await guids.InvokeAsync(Guid.NewGuid(), new Envelope(), Reminders, CancellationToken.None);
                }
                catch (InvalidOperationException e)
                {
                    error = e;
                }
            }, "jobs"),
            [new DelegateFilter((context, next) =>
            {
                batchContext = context;
                return next(context);
            })],
            "batched",
            "group",
            EmptyProvider.Instance);
        var buffer = new BatchBuffer<Job>();
        buffer.Append(new Job(1), 1, 4, tracked: false, default, null);

        await batchInvoker.InvokeAsync(new Batch<Job>(buffer), CancellationToken.None);

        error.Should().NotBeNull().And.BeOfType<InvalidOperationException>()
            .Which.Message.Should().Be(
                "A consume filter passed next the context of a 'Batch<Job>' message in the pipeline of a 'Guid' message: next must be given the context the filter received.");
        ids.Should().BeEmpty();
        handled.Should().Be(1, "the batch handler ran once, with its own context");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Filters_AroundAnInvoker_RunInRegistrationOrder_FirstOutermost(int count)
    {
        var trace = new List<string>();
        var filters = Enumerable.Range(1, count)
            .Select(i => (IConsumeFilter)new DelegateFilter(async (context, next) =>
            {
                trace.Add($"{i}>");
                await next(context);
                trace.Add($"<{i}");
            }))
            .ToList();
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(new RecordingInvoker(trace), filters);

        await invoker.InvokeAsync(new Memo("a"), new Envelope(), Reminders, CancellationToken.None);

        var expected = Enumerable.Range(1, count).Select(i => $"{i}>")
            .Append("handler a")
            .Concat(Enumerable.Range(1, count).Reverse().Select(i => $"<{i}"));
        trace.Should().Equal(expected);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Filter_ThatReturnsWithoutCallingNext_SkipsTheFiltersAfterItAndTheHandler(int skipping)
    {
        var trace = new List<string>();
        var filters = Enumerable.Range(0, 3)
            .Select(i => (IConsumeFilter)new DelegateFilter((context, next) =>
            {
                trace.Add($"filter {i}");
                return i == skipping ? default : next(context);
            }))
            .ToList();
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(new RecordingInvoker(trace), filters);

        await invoker.InvokeAsync(new Memo("a"), new Envelope(), Reminders, CancellationToken.None);

        trace.Should().Equal(Enumerable.Range(0, skipping + 1).Select(i => $"filter {i}"));
    }

    [Theory]
    [InlineData(0, false)]
    [InlineData(2, false)]
    [InlineData(0, true)]
    [InlineData(2, true)]
    public async Task Filter_ThatFails_PassesItsExceptionToTheCaller_AndTheContextIsClearedAndReused(int failing, bool asynchronously)
    {
        var contexts = new List<ConsumeContext>();
        var failure = new InvalidOperationException("refused by the filter");
        var filters = Enumerable.Range(0, 3)
            .Select(i => (IConsumeFilter)new DelegateFilter((context, next) =>
            {
                if (i == 0)
                {
                    contexts.Add(context);
                    context.Items.Count.Should().Be(0, "a reused context starts without the last message's items");
                    context.Items["seen"] = ((Memo)context.Message).Text;
                }

                if (i != failing || ((Memo)context.Message).Text != "fail")
                {
                    return next(context);
                }

                return asynchronously ? ValueTask.FromException(failure) : throw failure;
            }))
            .ToList();
        var trace = new List<string>();
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(new RecordingInvoker(trace), filters);
        await invoker.InvokeAsync(new Memo("warm"), new Envelope(), Reminders, CancellationToken.None);

        var call = () => invoker.InvokeAsync(new Memo("fail"), new Envelope { MessageType = "failed" }, Reminders, CancellationToken.None).AsTask();

        (await call.Should().ThrowAsync<InvalidOperationException>()).Which.Should().BeSameAs(failure);
        contexts[1].Envelope.MessageType.Should().BeNull("the failed message's context was cleared");
        await invoker.InvokeAsync(new Memo("next"), new Envelope(), Reminders, CancellationToken.None);
        trace.Should().Equal("handler warm", "handler next");
        contexts.Should().HaveCount(3);
        contexts.Distinct().Should().ContainSingle("a failed message's context carries the next message");
        contexts[2].Message.Should().BeNull("the context is cleared once its message is handled");
    }

    [Fact]
    public async Task Context_InUseByAnOuterMessage_AnInlineMessageOfTheSameTypeGetsItsOwn_AndTheMessagesAfterReuseOne()
    {
        var seen = new List<(string Text, ConsumeContext Context)>();
        MessageHandlerInvoker<Memo>? invoker = null;
        var inline = new InlineInvoker(async message =>
        {
            if (message.Text == "outer")
            {
                await invoker!.InvokeAsync(new Memo("inner"), new Envelope { MessageType = "inner" }, Reminders, CancellationToken.None);
            }
        });
        invoker = FilteredHandlerInvoker<Memo>.Wrap(inline, [new DelegateFilter((context, next) =>
        {
            seen.Add((((Memo)context.Message).Text, context));
            return next(context);
        })]);

        await invoker.InvokeAsync(new Memo("warm"), new Envelope(), Reminders, CancellationToken.None);
        await invoker.InvokeAsync(new Memo("outer"), new Envelope { MessageType = "outer" }, Reminders, CancellationToken.None);
        await invoker.InvokeAsync(new Memo("after"), new Envelope(), Reminders, CancellationToken.None);
        await invoker.InvokeAsync(new Memo("last"), new Envelope(), Reminders, CancellationToken.None);

        var warm = seen[0].Context;
        seen.RemoveAt(0);
        seen.Select(s => s.Text).Should().Equal("outer", "inner", "after", "last");
        seen[0].Context.Should().BeSameAs(warm, "the thread's free context carries its next message");
        seen[1].Context.Should().NotBeSameAs(seen[0].Context, "the outer message still travels in its context");
        seen[2].Context.Should().Match<ConsumeContext>(c => ReferenceEquals(c, seen[0].Context) || ReferenceEquals(c, seen[1].Context));
        seen[3].Context.Should().BeSameAs(seen[2].Context, "a finished context carries the next message");
    }

    [Fact]
    public async Task Contexts_OfFourLanesWhoseHandlersFinishOnAnotherThread_AreReused_NotMadeForEveryMessage()
    {
        // Each handler waits for a completer thread, which finishes it inline: the lane's next message starts there, as a
        // consumer lane continues on the thread its handler finished on.
        using var waiting = new System.Collections.Concurrent.BlockingCollection<TaskCompletionSource>();
        var completer = new Thread(() =>
        {
            foreach (var handler in waiting.GetConsumingEnumerable())
            {
                handler.SetResult();
            }
        }) { IsBackground = true };
        completer.Start();
        var contexts = new ConcurrentDictionary<ConsumeContext, byte>(ReferenceEqualityComparer.Instance);
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new InlineInvoker(message =>
            {
                var handler = new TaskCompletionSource();
                waiting.Add(handler);
                return new ValueTask(handler.Task);
            }),
            [new DelegateFilter((context, next) =>
            {
                contexts.TryAdd(context, 0);
                return next(context);
            })]);

        var lanes = Enumerable.Range(0, 4).Select(lane => Task.Run(async () =>
        {
            for (var i = 0; i < 50; i++)
            {
                await invoker.InvokeAsync(new Memo($"{lane}:{i}"), new Envelope(), Reminders, CancellationToken.None);
            }
        }));
        await Task.WhenAll(lanes).WaitAsync(TestHost.Wait);
        waiting.CompleteAdding();

        // The last lane may have finished on the completer thread, which then runs this method: wait for it elsewhere.
        await Task.Run(() => completer.Join());

        contexts.Count.Should().BeLessThanOrEqualTo(8, "200 messages on 4 lanes reuse the contexts of finished messages (4 in flight, a few parked on the lanes' first threads)");
    }

    private static Func<ConsumeContext, ConsumeDelegate, ValueTask> Recording(string name, ConcurrentQueue<string> trace) => async (context, next) =>
    {
        trace.Enqueue($"{name}> {context.MessageType.Name} {context.ConsumerGroup}");
        await next(context);
        trace.Enqueue($"<{name}");
    };

    private static readonly ConsumerIdentity Reminders = new("reminders", "group", EmptyProvider.Instance, null!);

    /// <summary>
    /// Handles a Memo message through a filter that hands its context to <paramref name="keep"/>; its handler runs
    /// <paramref name="inline"/> once (a second call of the handler, with the Memo context passed on by a foreign
    /// pipeline, is recorded but runs nothing) and returns what <paramref name="inline"/> threw.
    /// </summary>
    private static async Task<(List<string> Memos, Exception? Error)> RunInsideAMemoPipelineAsync(Action<ConsumeContext> keep, Func<ValueTask> inline)
    {
        var memos = new List<string>();
        Exception? error = null;
        var invoker = FilteredHandlerInvoker<Memo>.Wrap(
            new InlineInvoker(async message =>
            {
                memos.Add(message.Text);
                if (memos.Count > 1)
                {
                    return;
                }

                try
                {
                    await inline();
                }
                catch (InvalidOperationException e)
                {
                    error = e;
                }
            }),
            [new DelegateFilter((context, next) =>
            {
                keep(context);
                return next(context);
            })]);

        await invoker.InvokeAsync(new Memo("outer"), new Envelope(), Reminders, CancellationToken.None);
        return (memos, error);
    }


    private sealed class RecordingInvoker(List<string> trace) : MessageHandlerInvoker<Memo>
    {
        public override string HandlerName => "recording";

        public override ValueTask InvokeAsync(Memo message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
        {
            trace.Add($"handler {message.Text}");
            return default;
        }
    }

    private sealed class InlineInvoker(Func<Memo, ValueTask> handle) : MessageHandlerInvoker<Memo>
    {
        public override string HandlerName => "inline";

        public override ValueTask InvokeAsync(Memo message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken) =>
            handle(message);
    }

    private sealed class RecordingGuidInvoker(List<Guid> ids) : MessageHandlerInvoker<Guid>
    {
        public override string HandlerName => "ids";

        public override ValueTask InvokeAsync(Guid message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
        {
            ids.Add(message);
            return default;
        }
    }

    private sealed class TokenRecordingInvoker(List<(string Where, string Message, CancellationToken Token, ConsumeContext? Context)> seen) : MessageHandlerInvoker<Memo>
    {
        public override string HandlerName => "tokens";

        public override ValueTask InvokeAsync(Memo message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken)
        {
            seen.Add(("handler", message.Text, cancellationToken, null));
            return default;
        }
    }

    /// <summary>One reusable task source, as a pooled one: each task it gives may be asked for its result once.</summary>
    private sealed class PooledTaskSource : IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<bool> _core;

        /// <summary>Gets how many results were taken (one per task).</summary>
        public int Results { get; private set; }

        public ValueTask Start() => new(this, _core.Version);

        public void Complete() => _core.SetResult(true);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);

        public void GetResult(short token)
        {
            // Throws for a token whose result was taken (the source was reset since), as a pooled source does.
            _core.GetResult(token);
            Results++;
            _core.Reset();
        }
    }

    private sealed class CountingFilter : IConsumeFilter
    {
        public ValueTask InvokeAsync(ConsumeContext context, ConsumeDelegate next) => next(context);
    }

    private sealed class DelegateFilter(Func<ConsumeContext, ConsumeDelegate, ValueTask> filter) : IConsumeFilter
    {
        public ValueTask InvokeAsync(ConsumeContext context, ConsumeDelegate next) => filter(context, next);
    }

    private sealed class CompletedInvoker : MessageHandlerInvoker<Memo>
    {
        public override string HandlerName => "completed";

        public override ValueTask InvokeAsync(Memo message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken) => default;
    }

    private sealed class GatedInvoker(Task gate) : MessageHandlerInvoker<Memo>
    {
        public override string HandlerName => "gated";

        public override ValueTask InvokeAsync(Memo message, in Envelope envelope, ConsumerIdentity consumer, CancellationToken cancellationToken) =>
            message.Text == "slow" ? new ValueTask(gate) : default;
    }

    private sealed class EmptyProvider : IServiceProvider
    {
        public static readonly EmptyProvider Instance = new();

        public object? GetService(Type serviceType) => null;
    }
}

public sealed record Memo(string Text);
