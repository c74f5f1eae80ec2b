using Patterns.Threading;

namespace Patterns.Core.Tests.Threading;

public sealed class BiasedGateTests
{
    [Fact]
    public void EnterAsProducer_SameThreadInARow_BiasesToItAndEntersTheFastWay()
    {
        var sut = CreateSut();
        using var producer = new StepThread();

        var (biased, lastFast) = producer.Run(() =>
        {
            BiasedGate.Owner? owner = null;
            for (var i = 0; i <= BiasedGate.BiasAfter; i++)
            {
                owner = sut.EnterAsProducer();
                sut.Exit(owner);
            }

            return (sut.IsBiased, owner is not null);
        });

        biased.Should().BeTrue();
        lastFast.Should().BeTrue("the entry after the bias needs no lock");
    }

    [Fact]
    public void EnterAsProducer_AnotherThreadAfterTheBias_EndsTheBiasAndTakesTheLock()
    {
        var sut = CreateSut();
        using var first = new StepThread();
        using var second = new StepThread();
        first.Run(() => Bias(sut));

        var owner = second.Run(() =>
        {
            var entered = sut.EnterAsProducer();
            sut.Exit(entered);
            return entered;
        });

        owner.Should().BeNull();
        sut.IsBiased.Should().BeFalse();
    }

    [Fact]
    public void Enter_NotAProducerWhileBiased_KeepsTheBias()
    {
        var sut = CreateSut();
        using var producer = new StepThread();
        producer.Run(() => Bias(sut));

        sut.Enter(); // from the test's thread, as a timer or a flush would
        sut.Exit();
        var afterwards = producer.Run(() =>
        {
            var entered = sut.EnterAsProducer();
            sut.Exit(entered);
            return entered;
        });

        sut.IsBiased.Should().BeTrue();
        afterwards.Should().NotBeNull("a timer, flush or worker entry leaves the producer's bias in place");
    }

    [Fact]
    public async Task EnterAsProducer_OwnerWhileAnotherThreadHoldsTheLock_WaitsUntilItLeaves()
    {
        // The owner's fast way publishes that it is inside and then checks the lock: with the lock held by another
        // thread it must take the slow way and wait, never enter beside it.
        var sut = CreateSut();
        using var producer = new StepThread();
        producer.Run(() => Bias(sut));

        sut.Enter(); // as a flush or a worker would, from the test's thread
        var inside = 0;
        var entering = producer.Start(() =>
        {
            var owner = sut.EnterAsProducer();
            Volatile.Write(ref inside, 1);
            sut.Exit(owner);
        });

        // Whatever the owner's thread has done by now, it must not be inside while this thread holds the lock.
        Thread.Yield();
        var insideWhileHeld = Volatile.Read(ref inside);
        sut.Exit();

        await entering.WaitAsync(TestHost.Wait);
        insideWhileHeld.Should().Be(0);
        Volatile.Read(ref inside).Should().Be(1);
        sut.IsBiased.Should().BeTrue("an entry that is not a producer's leaves the bias in place");
    }

    [Fact]
    public void Gate_NotBiasable_NeverBiases()
    {
        var sut = new BiasedGate(biasable: false);

        using var producer = new StepThread();

        producer.Run(() => Bias(sut));

        sut.IsBiased.Should().BeFalse();
    }

    [Fact]
    public void Gate_OwnerOtherProducersAndOtherEntriesAtOnce_OneInsideAtATime()
    {
        // A plain counter and an "inside" marker updated under the gate: a lost update or two threads inside at once
        // shows as a wrong total or an overlap.
        var sut = CreateSut();
        var state = new Shared();
        const int ownerEntries = 200_000;
        const int otherEntries = 5_000;

        var threads = new[]
        {
            new Thread(() => Repeat(ownerEntries, () => Producer(sut, state))),
            new Thread(() => Repeat(otherEntries, () => Other(sut, state))),
            new Thread(() => Repeat(otherEntries, () =>
            {
                Producer(sut, state);
                Thread.Yield();
            })),
        };
        foreach (var thread in threads)
        {
            thread.Start();
        }

        foreach (var thread in threads)
        {
            thread.Join(TestHost.Wait).Should().BeTrue();
        }

        state.Overlaps.Should().Be(0);
        state.Count.Should().Be(ownerEntries + otherEntries + otherEntries);
    }

    private static BiasedGate CreateSut() => new(biasable: true);

    private static void Bias(BiasedGate gate)
    {
        for (var i = 0; i <= BiasedGate.BiasAfter; i++)
        {
            gate.Exit(gate.EnterAsProducer());
        }
    }

    private static void Producer(BiasedGate gate, Shared state)
    {
        var owner = gate.EnterAsProducer();
        state.Touch();
        gate.Exit(owner);
    }

    private static void Other(BiasedGate gate, Shared state)
    {
        gate.Enter();
        state.Touch();
        gate.Exit();
    }

    private static void Repeat(int times, Action action)
    {
        for (var i = 0; i < times; i++)
        {
            action();
        }
    }

    /// <summary>
    /// A thread that stays alive for the whole test and runs steps one at a time: managed thread ids are reused once a
    /// thread ends, and the gate tells threads apart by id.
    /// </summary>
    private sealed class StepThread : IDisposable
    {
        private readonly System.Collections.Concurrent.BlockingCollection<Action> _steps = [];
        private readonly Thread _thread;

        public StepThread()
        {
            _thread = new Thread(() =>
            {
                foreach (var step in _steps.GetConsumingEnumerable())
                {
                    step();
                }
            });
            _thread.Start();
        }

        public TResult Run<TResult>(Func<TResult> body)
        {
            var result = default(TResult);
            using var done = new ManualResetEventSlim();
            _steps.Add(() =>
            {
                result = body();
                done.Set();
            });
            done.Wait(TestHost.Wait).Should().BeTrue();
            return result!;
        }

        /// <summary>Queues a step without waiting for it; the returned task completes when it has run.</summary>
        public Task Start(Action body)
        {
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _steps.Add(() =>
            {
                body();
                done.SetResult();
            });
            return done.Task;
        }

        public void Run(Action body) => Run(() =>
        {
            body();
            return 0;
        });

        public void Dispose()
        {
            _steps.CompleteAdding();
            _thread.Join();
            _steps.Dispose();
        }
    }

    private sealed class Shared
    {
        private int _inside;

        public long Count { get; private set; }

        public int Overlaps { get; private set; }

        public void Touch()
        {
            if (++_inside != 1)
            {
                Overlaps++;
            }

            Count++;
            _inside--;
        }
    }
}
