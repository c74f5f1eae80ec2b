using System.Text;
using FluentAssertions;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

/// <summary>
/// Where the stores used to disagree: the idempotent retry of an append with each kind of expected version, and
/// what a hard delete leaves behind.
/// </summary>
/// <remarks>
/// An append is an exact retry when every one of its event ids is already in the stream, in the same order, with
/// consecutive versions, at the place its expected version puts them: <see cref="ExpectedVersion.Exact"/> (and
/// <see cref="ExpectedVersion.NoStream"/>, which is <c>Exact(0)</c>) right after that version;
/// <see cref="ExpectedVersion.Any"/> and <see cref="ExpectedVersion.StreamExists"/> wherever the events are. A retry
/// returns the original result, however far the stream has moved on since, and stores nothing. Any other reuse of a
/// stored id throws <see cref="DuplicateEventException"/>.
/// </remarks>
public abstract partial class EventStoreConformanceTests
{
    /// <summary>The expected versions a retry of the stream-creating append (versions 1-2) may carry, and whether each puts the events there.</summary>
    public static TheoryData<string, bool> StreamCreatingRetries => new()
    {
        { "Any", true },
        { "NoStream", true },
        { "StreamExists", true },
        { "Exact(0)", true },
        { "Exact(1)", false },
        { "Exact(3)", false },
    };

    /// <summary>The expected versions a retry of the later append (versions 3-4, first made with <c>Exact(2)</c>) may carry.</summary>
    public static TheoryData<string, bool> LaterRetries => new()
    {
        { "Any", true },
        { "StreamExists", true },
        { "Exact(2)", true },
        { "NoStream", false },
        { "Exact(1)", false },
        { "Exact(4)", false },
    };

    [Theory]
    [MemberData(nameof(StreamCreatingRetries))]
    public async Task Append_RetryOfTheStreamCreatingAppend_IsAnExactRetryOnlyWhereTheExpectedVersionPutsIt(string retriedWith, bool isRetry)
    {
        var store = await OpenAsync();
        var created = NewEvents(2);
        var original = await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, created, null, Timeout);
        await store.Events.AppendAsync("account-1", ExpectedVersion.Any, NewEvents(1), null, Timeout);

        await ShouldRetryOrRefuse(store, "account-1", Parse(retriedWith), created, original, isRetry);
    }

    [Theory]
    [MemberData(nameof(LaterRetries))]
    public async Task Append_RetryOfALaterAppend_IsAnExactRetryOnlyWhereTheExpectedVersionPutsIt(string retriedWith, bool isRetry)
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        var later = NewEvents(2);
        var original = await store.Events.AppendAsync("account-1", ExpectedVersion.Exact(2), later, null, Timeout);
        await store.Events.AppendAsync("account-1", ExpectedVersion.StreamExists, NewEvents(1), null, Timeout);

        await ShouldRetryOrRefuse(store, "account-1", Parse(retriedWith), later, original, isRetry);
    }

    [Theory]
    [InlineData("Any")]
    [InlineData("NoStream")]
    [InlineData("StreamExists")]
    [InlineData("Exact")]
    public async Task Append_ImmediateRetryWithTheOriginalExpectedVersion_ReturnsTheOriginalResult(string kind)
    {
        // Every kind of expected version, retried as a client retries after a lost acknowledgement: the same call again.
        var store = await OpenAsync();
        if (kind is "StreamExists" or "Exact")
        {
            await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);
        }

        var expected = kind switch
        {
            "Any" => ExpectedVersion.Any,
            "NoStream" => ExpectedVersion.NoStream,
            "StreamExists" => ExpectedVersion.StreamExists,
            _ => ExpectedVersion.Exact(1),
        };
        var events = NewEvents(2);
        var original = await store.Events.AppendAsync("account-1", expected, events, null, Timeout);

        await ShouldRetryOrRefuse(store, "account-1", expected, events, original, isRetry: true);
    }

    [Fact]
    public async Task Append_RetryOfAStreamCreatingAppendWithStreamExists_ReturnsTheOriginalResult()
    {
        // The case the stores disagreed on: the stream exists now, and the events sit at versions 1-2 where StreamExists allows them.
        var store = await OpenAsync();
        var events = NewEvents(2);
        var original = await store.Events.AppendAsync("account-1", ExpectedVersion.Any, events, null, Timeout);

        var retry = await store.Events.AppendAsync("account-1", ExpectedVersion.StreamExists, events, null, Timeout);

        retry.Should().Be(original);
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(2);
    }

    [Fact]
    public async Task Append_RetryToADeletedStream_ThrowsStreamDeletedException()
    {
        var store = await OpenAsync();
        var events = NewEvents(2);
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, null, Timeout);
        await store.Events.DeleteStreamAsync("account-1", ExpectedVersion.Any, StreamDeleteMode.Soft, Timeout);

        var retry = async () => await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, events, null, Timeout);

        await retry.Should().ThrowAsync<StreamDeletedException>("a deleted stream refuses every append, a retry included");
    }

    [Fact]
    public async Task DeleteStream_Hard_RemovesTheStreamsSnapshotAndSoftKeepsIt()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("account-1", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await store.Events.AppendAsync("account-2", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        await store.Events.AppendAsync("account-3", ExpectedVersion.NoStream, NewEvents(2), null, Timeout);
        var taken = new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero);
        foreach (var stream in new[] { "account-1", "account-2", "account-3" })
        {
            await store.Snapshots.SaveAsync(new StoredSnapshot(stream, 2, "bank.account", 1, Encoding.UTF8.GetBytes("{}"), taken), Timeout);
        }

        await store.Events.DeleteStreamAsync("account-1", ExpectedVersion.Exact(2), StreamDeleteMode.Hard, Timeout);
        await store.Events.DeleteStreamAsync("account-2", ExpectedVersion.Exact(2), StreamDeleteMode.Soft, Timeout);

        (await store.Snapshots.LoadAsync("account-1", Timeout)).Should().BeNull("a hard delete removes everything the stream held, its snapshot included");
        (await store.Snapshots.LoadAsync("account-2", Timeout)).Should().NotBeNull("a soft delete removes nothing");
        (await store.Snapshots.LoadAsync("account-3", Timeout)).Should().NotBeNull("another stream's snapshot stays");
    }

    private static ExpectedVersion Parse(string text) => text switch
    {
        "Any" => ExpectedVersion.Any,
        "NoStream" => ExpectedVersion.NoStream,
        "StreamExists" => ExpectedVersion.StreamExists,
        _ when text.StartsWith("Exact(", StringComparison.Ordinal) => ExpectedVersion.Exact(long.Parse(text[6..^1], System.Globalization.CultureInfo.InvariantCulture)),
        _ => throw new ArgumentOutOfRangeException(nameof(text), text, "Not an expected version."),
    };

    private async Task ShouldRetryOrRefuse(EventStoreFixture store, string streamId, ExpectedVersion expected, SerializedEvent[] events, AppendResult original, bool isRetry)
    {
        var before = await store.Events.GetStreamStateAsync(streamId, Timeout);
        var head = await store.Events.GetHeadPositionAsync(Timeout);

        var retry = async () => await store.Events.AppendAsync(streamId, expected, events, null, Timeout);

        if (isRetry)
        {
            (await retry()).Should().Be(original, "an exact retry with {0} returns the original result", expected);
        }
        else
        {
            var thrown = await retry.Should().ThrowAsync<DuplicateEventException>("{0} puts the events elsewhere, so this is no exact retry", expected);
            thrown.Which.EventId.Should().Be(events[0].EventId);
        }

        (await store.Events.GetStreamStateAsync(streamId, Timeout)).Should().Be(before, "a retry or a refused append stores nothing");
        (await store.Events.GetHeadPositionAsync(Timeout)).Should().Be(head);
    }
}
