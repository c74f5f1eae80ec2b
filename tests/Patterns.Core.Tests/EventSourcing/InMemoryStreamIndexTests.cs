using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>
/// The in-memory store finds event ids by scanning a short stream and through an index once a stream is longer: an exact
/// retry returns the original result and a reused id is refused either way.
/// </summary>
public sealed class InMemoryStreamIndexTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(40)]
    public async Task ExactRetryAndReusedId_AreRecognised_OnShortAndLongStreams(int length)
    {
        var store = new InMemoryEventStorage();
        var events = Enumerable.Range(0, length).Select(_ => Event()).ToArray();
        var results = new List<AppendResult>();
        for (var i = 0; i < length; i += 2)
        {
            results.Add(await store.AppendAsync("s", ExpectedVersion.Exact(i), events.Skip(i).Take(2).ToArray()));
        }

        var retry = await store.AppendAsync("s", ExpectedVersion.Exact(0), events.Take(2).ToArray());
        var reused = () => store.AppendAsync("s", ExpectedVersion.Exact(length), [Event(), events[^1]]).AsTask();

        retry.Should().Be(results[0]);
        (await reused.Should().ThrowAsync<DuplicateEventException>()).Which.EventId.Should().Be(events[^1].EventId);
        (await store.GetStreamStateAsync("s")).Version.Should().Be(length);
    }

    private static SerializedEvent Event() => new(Guid.NewGuid(), "happened", "{}"u8.ToArray(), DateTimeOffset.UnixEpoch);
}
